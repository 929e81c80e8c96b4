// `ckptbridge convert`: HF <-> MaxText.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>

#include "host/base/file.h"
#include "host/cli/commands.h"
#include "host/cli/format.h"
#include "host/cli/progress.h"
#include "host/engine/convert.h"
#include "host/engine/receipt.h"
#include "host/formats/orbax/checkpoint.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kHelp =
    R"(Usage: ckptbridge convert --to maxtext|hf [options] SOURCE DESTINATION

Converts one checkpoint, streaming tensor by tensor:

  --to maxtext   SOURCE is a Hugging Face folder (config.json + *.safetensors,
                 sharded or not). DESTINATION becomes a MaxText checkpoint:
                 DESTINATION/0/items is what MaxText's load_parameters_path
                 takes. Layers are stacked ("scanned") unless --no-scan-layers;
                 weights are saved as bfloat16 unless --save-dtype says otherwise.
  --to hf        SOURCE is a MaxText/Orbax checkpoint (its root, step directory
                 or items directory). DESTINATION becomes a Hugging Face folder:
                 safetensors shards, model.safetensors.index.json, config.json and
                 tokenizer files. The HF config comes from the checkpoint when
                 ckptbridge wrote it, else from --hf-config or --model.

The mapping is MaxText's own (checkpoint_conversion), supplied by the plugin
that serves the model's model_type. Nothing appears at DESTINATION unless the
whole conversion succeeded; an existing DESTINATION is replaced only with
--overwrite, and only at the end.

Precision: tensors are computed in float32 and rounded once to the output
dtype. Rules may keep named tensors in float32 whatever --save-dtype says
(Qwen3-Next's A_log and dt_bias); `ckptbridge plan` shows every dtype. Every
rounding to a narrower dtype is audited per tensor (max abs/rel error,
overflows to Inf, NaN, flushes to zero): convert prints a one-line summary and
--cast-audit FILE writes the whole table as JSON. A finite value that becomes
Inf is an error unless --allow-lossy; NaN in the source is kept and reported,
never an error.

Examples:
  ckptbridge convert --to maxtext path/to/Llama-3.1-8B out/llama-mt
  ckptbridge convert --to maxtext --no-scan-layers --save-dtype float32 path/to/hf out/mt-unscanned
  ckptbridge convert --to hf out/llama-mt/0/items out/llama-hf
  ckptbridge convert --to hf --model llama3.1-8b --tokenizer path/to/hf gs-copy/0/items out/hf

Options)";

// What `--verify` found, as the receipt records it.
nlohmann::json VerificationRecord(const Result<check::VerifyReport>& report) {
  nlohmann::json record = {{"verified_at", engine::UtcTimestamp(std::chrono::system_clock::now())}};
  if (!report.ok()) {
    record["result"] = "error";
    record["error"] = report.status().message();
    return record;
  }
  uint64_t exact = 0, beyond = 0, max_ulp = 0;
  for (const check::TensorCheck& t : report->tensors) {
    exact += t.exact() ? 1 : 0;
    beyond += t.ok() ? 0 : 1;
    max_ulp = std::max(max_ulp, t.max_ulp);
  }
  record["result"] = report->ok() ? "ok" : "mismatch";
  record["tensors"] = report->tensors.size();
  record["exact"] = exact;
  record["within_rounding"] = report->tensors.size() - exact - beyond;
  record["beyond_rounding"] = beyond;
  record["max_ulp"] = max_ulp;
  record["fingerprint_failures"] = report->fingerprints.size();
  record["structure_problems"] = report->structure.size();
  record["slices"] = report->slices;
  return record;
}

}  // namespace

int RunConvertCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  po::options_description options(kHelp);
  // clang-format off
  options.add_options()
      ("help,h", "Show this help")
      ("to", po::value<std::string>()->value_name("maxtext|hf"),
       "Direction: maxtext (HF -> MaxText) or hf (MaxText -> HF). Required")
      ("scan-layers", po::bool_switch(),
       "Stack layers on axis 1 (MaxText's scan_layers=true); the default for --to maxtext")
      ("no-scan-layers", po::bool_switch(),
       "One tensor per layer (decoder.layers_N...). With --to hf, only to assert what the "
       "checkpoint records")
      ("save-dtype", po::value<std::string>()->value_name("DTYPE"),
       "bfloat16 | float32 | float16 | source. To MaxText: default bfloat16 (as MaxText). "
       "To HF: default the config's torch_dtype, else bfloat16. source keeps each tensor's dtype "
       "(dequantized FP8/MXFP4 tensors: bfloat16)")
      ("allow-lossy", po::bool_switch(),
       "Write +-Inf where a finite value exceeds the output dtype (bfloat16 above ~3.39e38, "
       "float16 above 65504) instead of failing (exit 2, nothing written); the audit counts them")
      ("cast-audit", po::value<std::string>()->value_name("FILE"),
       "Write the cast audit as JSON: per tensor rounded to a narrower dtype, its elements, "
       "max_abs_error, max_rel_error, overflows (+ largest magnitude), nans, underflows")
      ("ocdbt", po::bool_switch(),
       "To MaxText: store the arrays in one OCDBT database per item (the default, as MaxText)")
      ("no-ocdbt", po::bool_switch(),
       "To MaxText: store each array in its own folder of files")
      ("zarr3", po::bool_switch(), "To MaxText: zarr v3 arrays (the default, as MaxText)")
      ("no-zarr3", po::bool_switch(),
       "To MaxText: zarr v2 arrays (Orbax's use_zarr3=False)")
      ("zstd-level", po::value<int>()->value_name("N"),
       "To MaxText: zstd level of the chunks, 1-22 (default 1, recorded in each array's "
       "metadata). Orbax writes 3 into zarr3 arrays: on bf16 weights that is as small and about "
       "half as fast. Any level restores the same")
      ("max-shard-size", po::value<std::string>()->value_name("SIZE")->default_value("3GiB"),
       "To HF: largest safetensors shard, e.g. 3GiB, 5GB, 500MiB")
      ("hf-config", po::value<std::string>()->value_name("FILE"),
       "To HF: the model's config.json, for checkpoints ckptbridge did not write")
      ("model", po::value<std::string>()->value_name("NAME"),
       "To HF: a MaxText model name whose HF config a plugin knows (llama3.1-8b, "
       "mixtral-8x7b, ...; see `ckptbridge plugins`)")
      ("tokenizer", po::value<std::string>()->value_name("DIR"),
       "To HF: copy tokenizer and generation config files from DIR (default: the source "
       "folder recorded in the checkpoint, if it still exists)")
      ("family", po::value<std::string>()->value_name("PLUGIN"),
       "Use this plugin (by name) instead of choosing from config.json")
      ("multimodal", po::bool_switch(),
       "Also convert vision towers and projectors, for families that have them (without it "
       "they are skipped, with a note)")
      ("mtp", po::bool_switch(),
       "Also convert multi-token-prediction layers, for families whose plugin maps them "
       "(without it they are skipped, with a note)")
      ("overwrite", po::bool_switch(), "Replace DESTINATION if it exists (at the very end)")
      ("resume", po::bool_switch(),
       "Continue a run of this same conversion that was killed (SIGKILL, OOM killer, power "
       "loss): its unfinished output next to DESTINATION is re-verified piece by piece (CRC-32C), "
       "what is intact is kept, the rest is converted; the result is the same as an "
       "uninterrupted run's. With no such leftover, a fresh run starts (with a note); a leftover "
       "of a different conversion (other source files, options or plugin version) is refused "
       "with exit code 2, naming what differs. A run stopped by Ctrl-C, SIGTERM or an error "
       "cleans up after itself and leaves nothing to resume")
      ("threads", po::value<int>()->value_name("N")->default_value(0),
       "Worker threads; 0 uses every core")
      ("max-memory", po::value<std::string>()->value_name("SIZE"),
       "Bytes the slices in flight may hold together, e.g. 1G, 512MiB (default: a quarter of "
       "the physical memory). A slice that alone needs more runs by itself, with a note")
      ("verify", po::bool_switch(),
       "Then compare the output with the source, as `ckptbridge verify` does, and record the "
       "result in the output's receipt (see `ckptbridge inspect`); exit 1 on a mismatch")
      ("quiet,q", po::bool_switch(), "No progress line and no notes; errors only");
  // clang-format on
  AddPluginOptions(options);
  po::options_description hidden;
  hidden.add_options()("paths", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("paths", -1);

  po::variables_map vars;
  if (!ParseArgs(args, "convert", all, positional, vars, err)) return 2;
  if (vars.count("help")) {
    out << options << '\n';
    return 0;
  }
  auto usage = [&](const std::string& message) {
    err << "ckptbridge convert: " << message << "\nsee `ckptbridge convert --help`\n";
    return 2;
  };
  const std::vector<std::string> paths = vars.count("paths")
                                             ? vars["paths"].as<std::vector<std::string>>()
                                             : std::vector<std::string>{};
  if (!vars.count("to")) return usage("--to maxtext or --to hf is required");
  if (paths.size() != 2)
    return usage("expected SOURCE and DESTINATION, got " + std::to_string(paths.size()) + " paths");

  engine::ConvertOptions convert;
  const std::string to = vars["to"].as<std::string>();
  if (to == "maxtext") {
    convert.direction = engine::Direction::kToMaxText;
  } else if (to == "hf" || to == "huggingface") {
    convert.direction = engine::Direction::kToHf;
  } else {
    return usage("--to '" + to + "' is not maxtext or hf");
  }
  convert.source = paths[0];
  convert.destination = paths[1];
  if (vars["scan-layers"].as<bool>() && vars["no-scan-layers"].as<bool>()) {
    return usage("--scan-layers and --no-scan-layers contradict each other");
  }
  if (vars["scan-layers"].as<bool>()) convert.scan_layers = true;
  if (vars["no-scan-layers"].as<bool>()) convert.scan_layers = false;
  if (vars["ocdbt"].as<bool>() && vars["no-ocdbt"].as<bool>()) {
    return usage("--ocdbt and --no-ocdbt contradict each other");
  }
  if (vars["ocdbt"].as<bool>()) convert.ocdbt = true;
  if (vars["no-ocdbt"].as<bool>()) convert.ocdbt = false;
  if (vars["zarr3"].as<bool>() && vars["no-zarr3"].as<bool>()) {
    return usage("--zarr3 and --no-zarr3 contradict each other");
  }
  if (vars["zarr3"].as<bool>()) convert.zarr3 = true;
  if (vars["no-zarr3"].as<bool>()) convert.zarr3 = false;
  if (vars.count("zstd-level")) {
    const int level = vars["zstd-level"].as<int>();
    if (level < orbax::kMinWriteZstdLevel || level > orbax::kMaxWriteZstdLevel) {
      return usage("--zstd-level must be " + std::to_string(orbax::kMinWriteZstdLevel) + " to " +
                   std::to_string(orbax::kMaxWriteZstdLevel) + ", got " + std::to_string(level));
    }
    convert.zstd_level = level;
  }
  if (vars.count("save-dtype")) convert.save_dtype = vars["save-dtype"].as<std::string>();
  convert.allow_lossy = vars["allow-lossy"].as<bool>();
  std::filesystem::path audit_file;
  if (vars.count("cast-audit")) {
    audit_file = vars["cast-audit"].as<std::string>();
    std::error_code ec;
    const std::filesystem::path dir =
        audit_file.has_parent_path() ? audit_file.parent_path() : std::filesystem::path(".");
    if (audit_file.filename().empty() || !std::filesystem::is_directory(dir, ec)) {
      return usage("--cast-audit " + audit_file.string() + ": no such directory " + dir.string());
    }
  }
  Result<uint64_t> shard = ParseSize(vars["max-shard-size"].as<std::string>(), "--max-shard-size");
  if (!shard.ok()) return ReportError(err, "convert", shard.status());
  convert.max_shard_bytes = *shard;
  if (vars.count("hf-config")) convert.hf_config_file = vars["hf-config"].as<std::string>();
  if (vars.count("model")) convert.model_name = vars["model"].as<std::string>();
  if (vars.count("tokenizer")) convert.tokenizer_dir = vars["tokenizer"].as<std::string>();
  if (vars.count("family")) convert.family = vars["family"].as<std::string>();
  convert.overwrite = vars["overwrite"].as<bool>();
  convert.resume = vars["resume"].as<bool>();
  if (vars["multimodal"].as<bool>()) convert.plugin_options["multimodal"] = true;
  if (vars["mtp"].as<bool>()) convert.plugin_options["mtp"] = true;
  convert.threads = vars["threads"].as<int>();
  if (convert.threads < 0) return usage("--threads must be 0 or more");
  if (vars.count("max-memory")) {
    Result<uint64_t> budget = ParseSize(vars["max-memory"].as<std::string>(), "--max-memory");
    if (!budget.ok()) return ReportError(err, "convert", budget.status());
    convert.max_memory = *budget;
  }
  const bool quiet = vars["quiet"].as<bool>();

  Result<PluginRegistry> plugins = DiscoverPlugins(vars);
  if (!plugins.ok()) return ReportError(err, "convert", plugins.status());

  engine::Progress progress;
  ProgressLine line(progress, !quiet);
  engine::ConvertObserver observer;
  observer.progress = &progress;
  observer.cancel = &CancelFlag();
  observer.notice = [&](const std::string& text) {
    if (!quiet) err << "note: " << text << '\n';
  };
  observer.planned = [&](const engine::Plan& plan) {
    if (!quiet)
      PrintPlanSummary(plan, convert.threads, convert.max_shard_bytes, err, convert.max_memory);
    line.Start();
  };

  SignalScope signals;
  const auto start = std::chrono::steady_clock::now();
  Result<engine::ConvertSummary> summary = engine::Convert(convert, *plugins, observer);
  line.Stop();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!summary.ok()) {
    if (summary.status().code() == StatusCode::kCancelled) {
      err << "ckptbridge convert: interrupted; nothing was written to "
          << convert.destination.string() << '\n';
      return 1;
    }
    return ReportError(err, "convert", summary.status());
  }
  const engine::ConvertSummary& s = *summary;
  const double rate = seconds > 0 ? static_cast<double>(s.bytes_read) / seconds : 0;
  out << "converted " << s.tensors_read << " tensors (" << HumanBytes(s.bytes_read) << ") into "
      << s.tensors_written << " tensors (" << HumanBytes(s.bytes_written) << ", "
      << HumanBytes(s.bytes_on_disk) << " on disk) with plugin " << s.plugin << " (" << s.model_type
      << ", " << (s.scan_layers ? "scanned" : "unscanned") << ") in " << HumanSeconds(seconds)
      << ", " << HumanBytes(static_cast<uint64_t>(rate)) << "/s, peak RSS "
      << HumanBytes(PeakRssBytes()) << '\n';
  if (convert.direction == engine::Direction::kToMaxText) {
    out << "wrote " << s.destination.string()
        << "  (MaxText: load_parameters_path=" << (s.destination / "0" / "items").string()
        << ", scan_layers=" << (s.scan_layers ? "true" : "false") << ")\n";
  } else {
    out << "wrote " << s.destination.string() << '\n';
  }
  out << engine::SummaryLine(engine::Summarize(s.casts)) << '\n';
  if (!audit_file.empty()) {
    // Written beside and renamed, so that FILE is either complete or absent.
    const std::string json = engine::CastAuditJson(s.casts, convert.allow_lossy).dump(2) + "\n";
    std::filesystem::path partial = audit_file;
    partial += ".partial";
    Status written = WriteFile(partial, json);
    std::error_code ec;
    if (written.ok()) std::filesystem::rename(partial, audit_file, ec);
    if (written.ok() && ec) written = ErrnoError(audit_file.string(), ec.value());
    if (!written.ok()) {
      std::filesystem::remove(partial, ec);
      return ReportError(err, "convert", written.WithContext("--cast-audit"));
    }
  }
  if (vars["verify"].as<bool>()) {
    check::VerifyOptions verify;
    verify.source = convert.source;
    verify.destination = s.destination;
    verify.family = convert.family;
    verify.hf_config_file = convert.hf_config_file;
    verify.model_name = convert.model_name;
    verify.plugin_options = convert.plugin_options;
    verify.threads = convert.threads;
    // As RunVerification, keeping the report for the receipt.
    engine::Progress verify_progress;
    ProgressLine verify_line(verify_progress, !quiet);
    verify.progress = &verify_progress;
    verify.cancel = &CancelFlag();
    verify_line.Start();
    Result<check::VerifyReport> report = check::Verify(verify, *plugins);
    verify_line.Stop();
    // The output is committed: the receipt is updated in place, atomically.
    const Status recorded =
        engine::RecordVerification(s.destination, convert.direction, VerificationRecord(report));
    if (!report.ok()) return ReportError(err, "verify", report.status());
    const int code =
        PrintVerifyReport(*report, convert.source.string(), s.destination.string(), out);
    if (!recorded.ok()) {
      return ReportError(err, "convert",
                         recorded.WithContext("cannot record the verification in the receipt"));
    }
    return code;
  }
  return 0;
}

}  // namespace ckptbridge::cli
