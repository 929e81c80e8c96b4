// `ckptbridge verify`: compare a conversion with its source.
#include <string>

#include "host/cli/commands.h"
#include "host/cli/format.h"
#include "host/cli/progress.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kHelp =
    R"(Usage: ckptbridge verify [options] SOURCE CONVERTED

Checks a conversion: re-reads CONVERTED, maps it back through the inverse of
the rules and compares it with SOURCE tensor by tensor, slice by slice (memory
stays bounded by the largest layer). SOURCE is the HF folder a MaxText
checkpoint was made from, or the Orbax checkpoint an HF folder was exported
from.

  - Lossless paths (bf16 -> bf16, bf16 -> f32, layout changes only) must match
    bit for bit.
  - Paths that round (f32 -> bf16, the query's 1/sqrt(head_dim) scale,
    dequantization) must be within 1 ULP of the narrower dtype; the table
    lists every tensor that is not bit-exact with its largest ULP error.
  - Axis fingerprints (per-row, per-column and per-head energies) are compared
    on both sides by what each axis means, catching a transposed square
    matrix, swapped gate/up halves, a permuted head order or FP8 weights whose
    scales were not applied - mistakes a symmetric round trip hides.

Exit status: 0 everything matches, 1 a mismatch (listed), 2 bad input.

Examples:
  ckptbridge verify path/to/Llama-3.1-8B out/llama-mt
  ckptbridge verify out/llama-mt/0/items out/llama-hf

Options)";

std::string Dtypes(const check::TensorCheck& t) {
  return std::string(ZarrName(t.source_dtype)) + " -> " + std::string(ZarrName(t.output_dtype));
}

}  // namespace

int PrintVerifyReport(const check::VerifyReport& report, const std::string& source,
                      const std::string& converted, std::ostream& out) {
  size_t exact = 0, rounded = 0, bad = 0;
  for (const check::TensorCheck& t : report.tensors) {
    if (!t.ok()) {
      ++bad;
    } else if (t.exact()) {
      ++exact;
    } else {
      ++rounded;
    }
  }
  out << "verified " << report.tensors.size() << " tensors (" << report.slices << " slices) of "
      << converted << " against " << source << " with plugin " << report.plugin << " ("
      << report.model_type << ", " << (report.scan_layers ? "scanned" : "unscanned")
      << "): " << exact << " bit-exact, " << rounded << " within rounding, " << bad
      << " mismatched\n";

  std::vector<std::vector<std::string>> rows = {{"TENSOR", "COMPARED", "DTYPES", "EXPECTED",
                                                 "MAX ULP", "DIFFERING", "MAX ABS ERROR",
                                                 "RESULT"}};
  for (const check::TensorCheck& t : report.tensors) {
    if (t.exact()) continue;
    char err_text[32];
    std::snprintf(err_text, sizeof err_text, "%.3g", t.max_abs_error);
    rows.push_back({t.name, t.direction, Dtypes(t),
                    t.lossless ? "bit-exact"
                               : "<= " + std::to_string(t.allowed_ulp) + " ULP " +
                                     std::string(ZarrName(t.ulp_dtype)),
                    t.max_ulp == UINT64_MAX ? "NaN" : std::to_string(t.max_ulp),
                    std::to_string(t.differing) + "/" + std::to_string(t.elements), err_text,
                    t.ok() ? "ok (rounding)" : "MISMATCH"});
  }
  if (rows.size() > 1) {
    out << "\nnot bit-exact:\n";
    PrintTable(out, rows);
  }
  if (bad > 0) {
    out << "\nmismatches:\n";
    for (const check::TensorCheck& t : report.tensors) {
      if (!t.ok()) {
        out << "  " << t.name << ": " << t.over_limit << " of " << t.elements << " elements beyond "
            << (t.lossless ? std::string("bit-exact")
                           : std::to_string(t.allowed_ulp) + " ULP of " +
                                 std::string(ZarrName(t.ulp_dtype)))
            << "; first: " << t.first_bad << '\n';
      }
    }
  }
  if (!report.fingerprints.empty()) {
    out << "\nfingerprint mismatches (the mapping itself is wrong, in both directions):\n";
    for (const check::FingerprintFinding& f : report.fingerprints) {
      out << "  " << f.message << '\n';
    }
  }
  if (!report.structure.empty()) {
    out << "\nstructure:\n";
    for (const std::string& s : report.structure) out << "  " << s << '\n';
  }
  for (const std::string& note : report.notes) out << "note: " << note << '\n';
  out << (report.ok() ? "verify: OK\n" : "verify: FAILED\n");
  return report.ok() ? 0 : 1;
}

int RunVerification(const check::VerifyOptions& options, const PluginRegistry& plugins, bool quiet,
                    std::ostream& out, std::ostream& err) {
  check::VerifyOptions run = options;
  engine::Progress progress;
  ProgressLine line(progress, !quiet);
  run.progress = &progress;
  run.cancel = &CancelFlag();
  line.Start();
  Result<check::VerifyReport> report = check::Verify(run, plugins);
  line.Stop();
  if (!report.ok()) return ReportError(err, "verify", report.status());
  return PrintVerifyReport(*report, options.source.string(), options.destination.string(), out);
}

int RunVerifyCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  po::options_description options(kHelp);
  // clang-format off
  options.add_options()
      ("help,h", "Show this help")
      ("hf-config", po::value<std::string>()->value_name("FILE"),
       "SOURCE is Orbax without ckptbridge's record: the model's config.json")
      ("model", po::value<std::string>()->value_name("NAME"),
       "SOURCE is Orbax without ckptbridge's record: a MaxText model name preset")
      ("family", po::value<std::string>()->value_name("PLUGIN"),
       "Use this plugin (by name) instead of choosing from config.json")
      ("multimodal", po::bool_switch(), "The conversion was made with --multimodal")
      ("mtp", po::bool_switch(), "The conversion was made with --mtp")
      ("threads", po::value<int>()->value_name("N")->default_value(0),
       "Worker threads; 0 uses every core")
      ("max-memory", po::value<std::string>()->value_name("SIZE"),
       "Bytes the slices being compared may hold together (default: a quarter of the physical "
       "memory)")
      ("quiet,q", po::bool_switch(), "No progress line");
  // clang-format on
  AddPluginOptions(options);
  po::options_description hidden;
  hidden.add_options()("paths", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("paths", -1);
  po::variables_map vars;
  if (!ParseArgs(args, "verify", all, positional, vars, err)) return 2;
  if (vars.count("help")) {
    out << options << '\n';
    return 0;
  }
  const std::vector<std::string> paths = vars.count("paths")
                                             ? vars["paths"].as<std::vector<std::string>>()
                                             : std::vector<std::string>{};
  if (paths.size() != 2) {
    err << "ckptbridge verify: expected SOURCE and CONVERTED, got " << paths.size()
        << " paths\nsee `ckptbridge verify --help`\n";
    return 2;
  }
  check::VerifyOptions verify;
  verify.source = paths[0];
  verify.destination = paths[1];
  if (vars.count("hf-config")) verify.hf_config_file = vars["hf-config"].as<std::string>();
  if (vars.count("model")) verify.model_name = vars["model"].as<std::string>();
  if (vars.count("family")) verify.family = vars["family"].as<std::string>();
  if (vars["multimodal"].as<bool>()) verify.plugin_options["multimodal"] = true;
  if (vars["mtp"].as<bool>()) verify.plugin_options["mtp"] = true;
  verify.threads = vars["threads"].as<int>();
  if (verify.threads < 0) {
    err << "ckptbridge verify: --threads must be 0 or more\n";
    return 2;
  }
  if (vars.count("max-memory")) {
    Result<uint64_t> budget = ParseSize(vars["max-memory"].as<std::string>(), "--max-memory");
    if (!budget.ok()) return ReportError(err, "verify", budget.status());
    verify.max_memory = *budget;
  }
  Result<PluginRegistry> plugins = DiscoverPlugins(vars);
  if (!plugins.ok()) return ReportError(err, "verify", plugins.status());
  SignalScope signals;
  return RunVerification(verify, *plugins, vars["quiet"].as<bool>(), out, err);
}

}  // namespace ckptbridge::cli
