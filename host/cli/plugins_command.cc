// `ckptbridge plugins`: which model families this installation converts.
#include <nlohmann/json.hpp>
#include <string>

#include "host/cli/commands.h"
#include "host/cli/format.h"
#include "host/cli/plugins_check.h"

namespace ckptbridge::cli {
namespace po = boost::program_options;
using nlohmann::json;

namespace {

constexpr const char* kHelp = R"(Usage: ckptbridge plugins [options]
       ckptbridge plugins check [options] FILE

Lists the model-family plugins found - name, version, plugin ABI, the HF
model_type values each converts, its MaxText model presets (for --model) and
the file it was loaded from - then any candidate that was rejected and why,
and the directories searched.

Search order: --plugin FILE, --plugin-dir DIR, $CKPTBRIDGE_PLUGIN_PATH, then
<install prefix>/lib/ckptbridge/plugins next to the binary. The current
directory is never searched. CKPTBRIDGE_PLUGIN_DEBUG=1 traces every decision.
When two plugins serve one model type, the first found serves it and the
other is listed under "rejected" with both paths; --plugin FILE puts a
plugin first.

`ckptbridge plugins check FILE` runs the conformance checks on one plugin
file; see `ckptbridge plugins check --help`.

Options)";

std::string Join(const std::vector<std::string>& items) {
  std::string s;
  for (const std::string& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

}  // namespace

int RunPluginsCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (!args.empty() && args[0] == "check") {
    return RunPluginsCheckCommand(std::vector<std::string>(args.begin() + 1, args.end()), out, err);
  }
  po::options_description options(kHelp);
  options.add_options()("help,h", "Show this help")("json", po::bool_switch(),
                                                    "Print JSON instead of a table");
  AddPluginOptions(options);
  po::variables_map vars;
  if (!ParseArgs(args, "plugins", options, {}, vars, err)) return 2;
  if (vars.count("help")) {
    out << options << '\n';
    return 0;
  }
  Result<PluginRegistry> registry = DiscoverPlugins(vars);
  if (!registry.ok()) return ReportError(err, "plugins", registry.status());

  if (vars["json"].as<bool>()) {
    json doc = {
        {"plugins", json::array()}, {"rejected", json::array()}, {"searched", json::array()}};
    for (const LoadedPlugin& p : registry->plugins()) {
      doc["plugins"].push_back(
          {{"name", p.name},
           {"version", p.version},
           {"abi", std::to_string(p.abi_major) + "." + std::to_string(p.abi_minor)},
           {"description", p.description},
           {"model_types", p.model_types},
           {"architectures", p.architectures},
           {"presets", p.model_presets},
           {"path", p.path.string()}});
    }
    for (const RejectedPlugin& r : registry->rejected()) {
      doc["rejected"].push_back({{"path", r.path.string()}, {"reason", r.reason}});
    }
    for (const auto& d : registry->searched_dirs()) doc["searched"].push_back(d.string());
    out << doc.dump(2) << '\n';
    return 0;
  }

  if (registry->plugins().empty()) {
    out << registry->Summary() << '\n';
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "VERSION", "ABI", "MODEL TYPES", "PATH"}};
    for (const LoadedPlugin& p : registry->plugins()) {
      rows.push_back({p.name, p.version,
                      std::to_string(p.abi_major) + "." + std::to_string(p.abi_minor),
                      Join(p.model_types), p.path.string()});
    }
    PrintTable(out, rows);
    for (const LoadedPlugin& p : registry->plugins()) {
      out << '\n' << p.name << ": " << p.description << '\n';
      if (!p.model_presets.empty()) out << "  presets (--model): " << Join(p.model_presets) << '\n';
    }
  }
  if (!registry->rejected().empty()) {
    out << "\nrejected:\n";
    for (const RejectedPlugin& r : registry->rejected()) {
      out << "  " << r.path.string() << ": " << r.reason << '\n';
    }
  }
  out << "\nsearched: ";
  std::vector<std::string> dirs;
  for (const auto& d : registry->searched_dirs()) dirs.push_back(d.string());
  out << (dirs.empty() ? std::string("(no directories)") : Join(dirs)) << '\n';
  return 0;
}

}  // namespace ckptbridge::cli
