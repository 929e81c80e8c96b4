// `ckptbridge plugins check FILE`: the conformance kit on one plugin.
#include "host/cli/plugins_check.h"

#include <boost/program_options.hpp>
#include <string>

#include "ckptbridge/testkit/conformance.hpp"
#include "host/cli/commands.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kHelp = R"(Usage: ckptbridge plugins check [options] FILE

Checks that the plugin FILE (libckptbridge_<name>.so) works with this host,
loading it alone - no other plugin, no search path:

  load        it loads and its descriptor is valid (ABI, name, semver, ...)
  presets     every MaxText preset yields a config of a served model type
  samples     it has sample configs (ABI 1.1) for every model type
  create, config, rules
              for every sample config: an adapter, both config translations,
              and the rules of both directions, scanned and unscanned (unique
              MaxText paths, resolvable HF key templates, invertible op
              chains matching the shapes, consistent axis meanings)
  round trip  a random HF checkpoint synthesized from the rules, converted to
              MaxText (float32) and back, scanned and unscanned, through every
              Orbax storage variant (OCDBT on/off x zarr3 on/off): every
              declared tensor written, every HF tensor back bit for bit
              (except those of rules flagged lossy)

One line per check (PASS, FAIL or SKIP), then a count. Plugins without
sample configs (built against ABI 1.0) get the load and preset checks only.

Exit status: 0 nothing failed, 1 a check failed, 2 bad usage.

Options)";

}  // namespace

int RunPluginsCheckCommand(const std::vector<std::string>& args, std::ostream& out,
                           std::ostream& err) {
  po::options_description options(kHelp);
  options.add_options()("help,h", "Show this help")(
      "work-dir", po::value<std::string>()->value_name("DIR"),
      "Keep the synthesized checkpoints and conversions in DIR (default: a temporary "
      "directory, removed afterwards)")("seed", po::value<uint32_t>()->default_value(1234),
                                        "Seed of the random tensor values")(
      "quick", po::bool_switch(), "Round trips through the default storage (OCDBT + zarr3) only");
  po::options_description hidden;
  hidden.add_options()("file", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("file", -1);
  po::variables_map vars;
  if (!ParseArgs(args, "plugins check", all, positional, vars, err)) return 2;
  if (vars.count("help")) {
    out << options << '\n';
    return 0;
  }
  if (!vars.count("file") || vars["file"].as<std::vector<std::string>>().size() != 1) {
    err << "ckptbridge plugins check: expected exactly one plugin FILE\n"
        << "see `ckptbridge plugins check --help`\n";
    return 2;
  }
  testkit::Options kit;
  kit.plugin = vars["file"].as<std::vector<std::string>>()[0];
  if (vars.count("work-dir")) kit.work_dir = vars["work-dir"].as<std::string>();
  kit.seed = vars["seed"].as<uint32_t>();
  kit.all_storage_variants = !vars["quick"].as<bool>();
  kit.on_result = [&](const testkit::CheckResult& r) {
    out << testkit::FormatResult(r) << '\n' << std::flush;
  };
  testkit::Report report = testkit::CheckPlugin(kit);
  out << report.Count(testkit::Outcome::kPass) << " passed, "
      << report.Count(testkit::Outcome::kFail) << " failed, "
      << report.Count(testkit::Outcome::kSkip) << " skipped\n";
  return report.ok() ? 0 : 1;
}

}  // namespace ckptbridge::cli
