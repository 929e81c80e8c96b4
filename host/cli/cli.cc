#include <cstdlib>
#include <string>

#include "host/base/version.h"
#include "host/cli/commands.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    R"(ckptbridge - convert LLM checkpoints between Hugging Face and MaxText

Usage: ckptbridge <command> [options] [arguments]

Commands:
  convert   Convert a checkpoint: HF safetensors -> MaxText Orbax (--to maxtext),
            or MaxText Orbax -> HF safetensors (--to hf)
  inspect   List every tensor of an HF folder or an Orbax checkpoint
  strip     Write an inference checkpoint (parameters only) from a MaxText
            training checkpoint
  restack   Turn a scanned MaxText checkpoint into an unscanned one, or back
  plan      Dry run: every output tensor, shards, bytes, peak memory and disk
            needed, from headers only
  verify    Compare a converted checkpoint with its source, tensor by tensor
  doctor    Lint an HF folder or an Orbax checkpoint before converting it
  plugins   List the model-family plugins found, with their versions and presets
  help      Show the help of a command: ckptbridge help convert

Options:
  -h, --help     Show this help
  --version      Show the version

Examples:
  ckptbridge inspect path/to/hf-model
  ckptbridge convert --to maxtext path/to/hf-model out/mt
  ckptbridge convert --to hf out/mt/0/items out/hf

Model families come from plugins (libckptbridge_<name>.so), searched in this
order: --plugin FILE, --plugin-dir DIR, $CKPTBRIDGE_PLUGIN_PATH (colon-separated
directories), then <install prefix>/lib/ckptbridge/plugins next to this binary.
Set CKPTBRIDGE_PLUGIN_DEBUG=1 to see why each candidate was accepted or rejected.

Exit status: 0 success, 1 the conversion failed, 2 bad usage or bad input.
)";

}  // namespace

void AddPluginOptions(po::options_description& options) {
  options.add_options()("plugin",
                        po::value<std::vector<std::string>>()->value_name("FILE")->composing(),
                        "Load this plugin first (repeatable); failing to load it is an error")(
      "plugin-dir", po::value<std::vector<std::string>>()->value_name("DIR")->composing(),
      "Also search this directory for libckptbridge_*.so plugins (repeatable)");
}

Result<PluginRegistry> DiscoverPlugins(const po::variables_map& vars) {
  DiscoveryOptions options;
  if (vars.count("plugin")) {
    for (const auto& f : vars["plugin"].as<std::vector<std::string>>())
      options.plugin_files.push_back(f);
  }
  if (vars.count("plugin-dir")) {
    for (const auto& d : vars["plugin-dir"].as<std::vector<std::string>>())
      options.plugin_dirs.push_back(d);
  }
  return PluginRegistry::Discover(options);
}

namespace {
extern "C" void OnSignal(int) { CancelFlag().store(true); }
}  // namespace

std::atomic<bool>& CancelFlag() {
  static std::atomic<bool> flag{false};
  return flag;
}

SignalScope::SignalScope() {
  CancelFlag().store(false);
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &old_int_);
  sigaction(SIGTERM, &action, &old_term_);
}

SignalScope::~SignalScope() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

int ReportError(std::ostream& err, const std::string& command, const Status& status) {
  err << "ckptbridge " << command << ": " << status.message() << '\n';
  return ExitCodeFor(status);
}

bool ParseArgs(const std::vector<std::string>& args, const std::string& command,
               const po::options_description& options,
               const po::positional_options_description& positional, po::variables_map& vars,
               std::ostream& err) {
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vars);
    po::notify(vars);
  } catch (const po::error& e) {
    err << "ckptbridge " << command << ": " << e.what() << "\nsee `ckptbridge " << command
        << " --help`\n";
    return false;
  }
  return true;
}

int RunCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.size() < 2) {
    err << kUsage;
    return 2;
  }
  const std::string& command = args[1];
  const std::vector<std::string> rest(args.begin() + 2, args.end());
  if (command == "-h" || command == "--help") {
    out << kUsage;
    return 0;
  }
  if (command == "--version" || command == "version") {
    out << "ckptbridge " << kVersion << '\n';
    return 0;
  }
  if (command == "help") {
    if (rest.empty()) {
      out << kUsage;
      return 0;
    }
    return RunCli({args[0], rest[0], "--help"}, out, err);
  }
  if (command == "convert") return RunConvertCommand(rest, out, err);
  if (command == "inspect") return RunInspectCommand(rest, out, err);
  if (command == "plugins") return RunPluginsCommand(rest, out, err);
  if (command == "strip") return RunStripCommand(rest, out, err);
  if (command == "restack") return RunRestackCommand(rest, out, err);
  if (command == "verify") return RunVerifyCommand(rest, out, err);
  if (command == "plan") return RunPlanCommand(rest, out, err);
  if (command == "doctor") return RunDoctorCommand(rest, out, err);
  err << "ckptbridge: unknown command '" << command << "'\n\n" << kUsage;
  return 2;
}

}  // namespace ckptbridge::cli
