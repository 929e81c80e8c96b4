// host/plugin/loader.h - finding and loading adapter plugins.
//
// This component is the only code in ckptbridge that includes Boost.DLL
// (loader.cc). Plugins are loaded with RTLD_NOW | RTLD_LOCAL (plus
// RTLD_NODELETE) and are never unloaded: descriptors, family names and
// function tables are borrowed from plugin memory for the life of the process.
//
// Discovery order (the first plugin with a given name wins, later ones with
// that name are rejected; the first plugin to claim a model type wins it, and
// a later plugin claiming it too still loads for its other types, with a note
// in rejected(); both kinds of conflict are also printed as a warning naming
// both files):
//   1. --plugin FILE        (each given file; any failure is fatal)
//   2. --plugin-dir DIR     (each directory, non-recursively)
//   3. CKPTBRIDGE_PLUGIN_PATH, colon-separated absolute directories (empty and
//      relative entries are ignored; a relative one is noted in rejected())
//   4. the install directory next to the binary: <exe dir>/../lib/ckptbridge/plugins
// The current directory is never searched. In directories only files named
// libckptbridge_<name>.so are candidates, taken in sorted order.
//
// CKPTBRIDGE_PLUGIN_DEBUG=1 prints every candidate and why it was accepted or
// rejected to the debug stream.
//
// A plugin is accepted when its entry point `ckptbridge_plugin_entry_v1`
// returns a descriptor that validates: struct sizes large enough, ABI major
// equal to the host's, ABI minor not higher than the host's, non-empty name and
// semver version, at least one model type, all required functions present,
// and (ABI 1.1 descriptors) sample configs for served model types only, with
// non-empty, distinct variant labels.
#ifndef CKPTBRIDGE_HOST_PLUGIN_LOADER_H_
#define CKPTBRIDGE_HOST_PLUGIN_LOADER_H_

#include <filesystem>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "ckptbridge/plugin_abi.h"
#include "host/base/status.h"

namespace ckptbridge {

// A sample config of a plugin (ABI 1.1, plugin_abi.h ckb_sample_config): what
// the conformance kit synthesizes test checkpoints from.
struct SampleConfig {
  std::string model_type;
  std::string variant;
  std::string config_json;
};

// A plugin that loaded and validated. Cheap to copy; the descriptor stays
// valid for the life of the process.
struct LoadedPlugin {
  std::filesystem::path path;  // absolute
  std::string name;
  std::string version;
  std::string description;
  uint32_t abi_major = 0;
  uint32_t abi_minor = 0;
  std::vector<std::string> model_types;
  std::vector<std::string> architectures;
  std::vector<std::string> model_presets;
  // Empty for plugins that declare none, and for ABI 1.0 descriptors (which
  // end before the field).
  std::vector<SampleConfig> sample_configs;
  const ckb_plugin_descriptor* descriptor = nullptr;
};

// A candidate that was not accepted, and why.
struct RejectedPlugin {
  std::filesystem::path path;
  std::string reason;
};

struct DiscoveryOptions {
  std::vector<std::filesystem::path> plugin_files;  // --plugin
  std::vector<std::filesystem::path> plugin_dirs;   // --plugin-dir
  bool use_environment = true;                      // CKPTBRIDGE_PLUGIN_PATH
  bool use_install_dir = true;                      // <exe dir>/../lib/ckptbridge/plugins
  // Where CKPTBRIDGE_PLUGIN_DEBUG output goes (nullptr: std::cerr). The
  // variable is read from the environment unless `debug` forces it on.
  std::ostream* debug_stream = nullptr;
  bool debug = false;
  // Where conflicts are reported as they are found - a plugin name or a model
  // type that an earlier plugin already has - naming both files
  // ("ckptbridge: warning: ..."); nullptr: std::cerr. The same text is kept
  // in rejected().
  std::ostream* warning_stream = nullptr;
  bool warn_conflicts = true;
};

// Loads one plugin file. Errors name the path and say why (dlerror text,
// missing entry symbol, ABI versions on both sides, invalid descriptor).
Result<LoadedPlugin> LoadPlugin(const std::filesystem::path& file);

class PluginRegistry {
 public:
  // Runs discovery. Fails only for --plugin files that do not load; problems
  // with directory candidates are recorded in rejected().
  static Result<PluginRegistry> Discover(const DiscoveryOptions& options);

  const std::vector<LoadedPlugin>& plugins() const { return plugins_; }
  const std::vector<RejectedPlugin>& rejected() const { return rejected_; }
  // The directories that were searched, in order.
  const std::vector<std::filesystem::path>& searched_dirs() const { return searched_dirs_; }

  // Lookups; nullptr when no plugin matches.
  const LoadedPlugin* FindByModelType(std::string_view model_type) const;
  const LoadedPlugin* FindByArchitecture(std::string_view architecture) const;
  const LoadedPlugin* FindByPreset(std::string_view model_name) const;
  const LoadedPlugin* FindByName(std::string_view name) const;

  // "llama 0.1.0 (llama, mistral, mixtral), gemma 0.2.0 (gemma2, gemma3)" -
  // for errors that must say what was found. "no plugins were found (searched: ...)"
  // when empty.
  std::string Summary() const;

 private:
  std::vector<LoadedPlugin> plugins_;
  std::vector<RejectedPlugin> rejected_;
  std::vector<std::filesystem::path> searched_dirs_;
};

// The directory next to the running binary where installed plugins live.
std::filesystem::path InstallPluginDir();

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_PLUGIN_LOADER_H_
