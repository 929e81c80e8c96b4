// `ckptbridge strip` and `ckptbridge restack`: MaxText checkpoint -> MaxText
// inference checkpoint.
#include <chrono>
#include <string>

#include "host/cli/commands.h"
#include "host/cli/format.h"
#include "host/cli/progress.h"
#include "host/engine/rewrite.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kStripHelp = R"(Usage: ckptbridge strip [options] SOURCE DESTINATION

Writes an inference checkpoint from a MaxText checkpoint: the model parameters
only, without optimizer state (Adam mu/nu...) or RNG state, in MaxText's Linen
layout {step, params: {params: ...}, opt_state: {}}. SOURCE may be a training
checkpoint in any layout MaxText writes (Linen, NNX-SFT, NNX-RL): its root,
step directory or items directory. Arrays are copied chunk by chunk, bit for
bit; memory stays at one chunk per thread.

The layers keep their layout unless --scan-layers/--no-scan-layers asks for the
other one (then this is `restack`, which needs the model: see its --help).

Examples:
  ckptbridge strip gs-copy/checkpoints/5000 out/inference
  ckptbridge strip --no-scan-layers out/train/5000/items out/unscanned

Options)";

constexpr const char* kRestackHelp =
    R"(Usage: ckptbridge restack --scan-layers|--no-scan-layers [options] SOURCE DESTINATION

Turns a scanned MaxText checkpoint (layers stacked on axis 1) into an unscanned
one (decoder.layers_N...) or back, writing the parameters only. The plugin of
the model's family says which slice of which tensor is which layer (including
grouped layouts such as layer blocks and dense/MoE layer groups); every slice
is moved bit for bit, one at a time.

The model is known from what ckptbridge recorded in SOURCE, or from
--hf-config FILE or --model NAME, as for `convert --to hf`.

Examples:
  ckptbridge restack --no-scan-layers out/mt out/mt-unscanned
  ckptbridge restack --scan-layers --model llama3.1-8b maxtext/0/items out/scanned

Options)";

int RunRewrite(const std::vector<std::string>& args, const std::string& command, std::ostream& out,
               std::ostream& err) {
  const bool restack = command == "restack";
  po::options_description options(restack ? kRestackHelp : kStripHelp);
  // clang-format off
  options.add_options()
      ("help,h", "Show this help")
      ("scan-layers", po::bool_switch(), "Write stacked layers (MaxText scan_layers=true)")
      ("no-scan-layers", po::bool_switch(), "Write one tensor per layer (decoder.layers_N...)")
      ("ocdbt", po::bool_switch(),
       "Store the arrays in one OCDBT database (the default, as MaxText)")
      ("no-ocdbt", po::bool_switch(), "Store each array in its own folder of files")
      ("zarr3", po::bool_switch(), "Write zarr v3 arrays (the default)")
      ("no-zarr3", po::bool_switch(), "Write zarr v2 arrays")
      ("zstd-level", po::value<int>()->value_name("N"),
       "zstd level of the chunks, 1-22 (default 1; Orbax writes 3, as small on bf16 weights "
       "and about half as fast)")
      ("hf-config", po::value<std::string>()->value_name("FILE"),
       "The model's HF config.json, when SOURCE was not written by ckptbridge (layout changes "
       "only)")
      ("model", po::value<std::string>()->value_name("NAME"),
       "A MaxText model name whose HF config a plugin knows (layout changes only)")
      ("family", po::value<std::string>()->value_name("PLUGIN"), "Use this plugin (by name)")
      ("overwrite", po::bool_switch(), "Replace DESTINATION if it exists (at the very end)")
      ("threads", po::value<int>()->value_name("N")->default_value(0),
       "Worker threads; 0 uses every core")
      ("max-memory", po::value<std::string>()->value_name("SIZE"),
       "Bytes the slices in flight may hold together (default: a quarter of the physical "
       "memory)")
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
  if (!ParseArgs(args, command, all, positional, vars, err)) return 2;
  if (vars.count("help")) {
    out << options << '\n';
    return 0;
  }
  auto usage = [&](const std::string& message) {
    err << "ckptbridge " << command << ": " << message << "\nsee `ckptbridge " << command
        << " --help`\n";
    return 2;
  };
  const std::vector<std::string> paths = vars.count("paths")
                                             ? vars["paths"].as<std::vector<std::string>>()
                                             : std::vector<std::string>{};
  if (paths.size() != 2) {
    return usage("expected SOURCE and DESTINATION, got " + std::to_string(paths.size()) + " paths");
  }
  engine::RewriteOptions rewrite;
  rewrite.source = paths[0];
  rewrite.destination = paths[1];
  const bool scan = vars["scan-layers"].as<bool>(), no_scan = vars["no-scan-layers"].as<bool>();
  if (scan && no_scan) return usage("--scan-layers and --no-scan-layers contradict each other");
  if (scan) rewrite.scan_layers = true;
  if (no_scan) rewrite.scan_layers = false;
  if (restack && !rewrite.scan_layers)
    return usage("--scan-layers or --no-scan-layers is required");
  if (vars["ocdbt"].as<bool>() && vars["no-ocdbt"].as<bool>()) {
    return usage("--ocdbt and --no-ocdbt contradict each other");
  }
  if (vars["zarr3"].as<bool>() && vars["no-zarr3"].as<bool>()) {
    return usage("--zarr3 and --no-zarr3 contradict each other");
  }
  rewrite.storage.ocdbt = !vars["no-ocdbt"].as<bool>();
  rewrite.storage.zarr3 = !vars["no-zarr3"].as<bool>();
  if (vars.count("zstd-level")) {
    const int level = vars["zstd-level"].as<int>();
    if (level < orbax::kMinWriteZstdLevel || level > orbax::kMaxWriteZstdLevel) {
      return usage("--zstd-level must be " + std::to_string(orbax::kMinWriteZstdLevel) + " to " +
                   std::to_string(orbax::kMaxWriteZstdLevel) + ", got " + std::to_string(level));
    }
    rewrite.storage.zstd_level = level;
  }
  if (vars.count("hf-config")) rewrite.hf_config_file = vars["hf-config"].as<std::string>();
  if (vars.count("model")) rewrite.model_name = vars["model"].as<std::string>();
  if (vars.count("family")) rewrite.family = vars["family"].as<std::string>();
  rewrite.overwrite = vars["overwrite"].as<bool>();
  rewrite.threads = vars["threads"].as<int>();
  if (rewrite.threads < 0) return usage("--threads must be 0 or more");
  if (vars.count("max-memory")) {
    Result<uint64_t> budget = ParseSize(vars["max-memory"].as<std::string>(), "--max-memory");
    if (!budget.ok()) return ReportError(err, command, budget.status());
    rewrite.max_memory = *budget;
  }
  const bool quiet = vars["quiet"].as<bool>();

  Result<PluginRegistry> plugins = DiscoverPlugins(vars);
  if (!plugins.ok()) return ReportError(err, command, plugins.status());

  engine::Progress progress;
  ProgressLine line(progress, !quiet);
  engine::ConvertObserver observer;
  observer.progress = &progress;
  observer.cancel = &CancelFlag();
  observer.notice = [&](const std::string& text) {
    if (!quiet) err << "note: " << text << '\n';
  };
  observer.planned = [&](const engine::Plan&) { line.Start(); };
  SignalScope signals;
  const auto start = std::chrono::steady_clock::now();
  Result<engine::ConvertSummary> summary = engine::RewriteMaxText(rewrite, *plugins, observer);
  line.Stop();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!summary.ok()) {
    if (summary.status().code() == StatusCode::kCancelled) {
      err << "ckptbridge " << command << ": interrupted; nothing was written to "
          << rewrite.destination.string() << '\n';
      return 1;
    }
    return ReportError(err, command, summary.status());
  }
  out << "wrote " << summary->tensors_written << " parameters ("
      << HumanBytes(summary->bytes_written) << ", " << HumanBytes(summary->bytes_on_disk)
      << " on disk, " << (summary->scan_layers ? "scanned" : "unscanned") << ") to "
      << summary->destination.string() << " in " << HumanSeconds(seconds) << ", peak RSS "
      << HumanBytes(PeakRssBytes())
      << "  (MaxText: load_parameters_path=" << (summary->destination / "0" / "items").string()
      << ")\n";
  return 0;
}

}  // namespace

int RunStripCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return RunRewrite(args, "strip", out, err);
}

int RunRestackCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return RunRewrite(args, "restack", out, err);
}

}  // namespace ckptbridge::cli
