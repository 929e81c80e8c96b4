// `ckptbridge doctor`: lint a checkpoint before work starts.
#include <string>

#include "host/check/doctor.h"
#include "host/cli/commands.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kHelp =
    R"(Usage: ckptbridge doctor [options] PATH

Lints a checkpoint before any work starts, from its metadata alone: an HF
folder (config.json, model.safetensors.index.json, every shard header) or an
Orbax checkpoint (root, step or item directory). Each finding comes with a
one-line fix:

  HF      index vs shard headers (missing shards, stale entries, unlisted
          tensors, unused files, duplicate keys), layer holes, MTP layers vs
          num_hidden_layers, tie_word_embeddings vs lm_head,
          quantization_config vs the tensors, torch_dtype vs the dtypes,
          unaligned data, missing __metadata__ format, no plugin for the family
  Orbax   unfinished (.orbax-checkpoint-tmp) saves, a step whose item is not
          `items`, unreadable metadata or OCDBT manifest, not a MaxText tree,
          no recorded HF config

Exit status: 0 no errors (warnings and notes allowed), 1 errors found,
2 bad usage or no such path.

Options)";

std::string KindName(check::PathKind kind) {
  switch (kind) {
    case check::PathKind::kHf:
      return "Hugging Face";
    case check::PathKind::kOrbax:
      return "Orbax";
    case check::PathKind::kUnknown:
      break;
  }
  return "unrecognized";
}

}  // namespace

int RunDoctorCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  po::options_description options(kHelp);
  options.add_options()("help,h", "Show this help");
  AddPluginOptions(options);
  po::options_description hidden;
  hidden.add_options()("paths", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("paths", -1);
  po::variables_map vars;
  if (!ParseArgs(args, "doctor", all, positional, vars, err)) return 2;
  if (vars.count("help")) {
    out << options << '\n';
    return 0;
  }
  const std::vector<std::string> paths = vars.count("paths")
                                             ? vars["paths"].as<std::vector<std::string>>()
                                             : std::vector<std::string>{};
  if (paths.size() != 1) {
    err << "ckptbridge doctor: expected one PATH, got " << paths.size()
        << "\nsee `ckptbridge doctor --help`\n";
    return 2;
  }
  Result<PluginRegistry> plugins = DiscoverPlugins(vars);
  if (!plugins.ok()) return ReportError(err, "doctor", plugins.status());
  Result<check::DoctorReport> report = check::Doctor(paths[0], &*plugins);
  if (!report.ok()) return ReportError(err, "doctor", report.status());
  const size_t errors = report->Count(check::Severity::kError);
  const size_t warnings = report->Count(check::Severity::kWarning);
  const size_t infos = report->Count(check::Severity::kInfo);
  out << "doctor: " << paths[0] << " (" << KindName(report->kind) << "): " << errors << " error"
      << (errors == 1 ? "" : "s") << ", " << warnings << " warning" << (warnings == 1 ? "" : "s")
      << ", " << infos << " note" << (infos == 1 ? "" : "s") << '\n';
  for (const check::Finding& f : report->findings) {
    out << "  " << check::SeverityName(f.severity) << " [" << f.code << "] " << f.message << '\n'
        << "      fix: " << f.fix << '\n';
  }
  return errors > 0 ? 1 : 0;
}

}  // namespace ckptbridge::cli
