// host/plugin/loader.cc - Boost.DLL loading, descriptor validation, discovery.
//
// The only translation unit in ckptbridge that includes Boost.DLL (see
// /work/shared/docs/plugin-abi.md §1). Facts about Boost 1.74 this file relies
// on:
//  - <vector> and <string> must come before the Boost.DLL headers when
//    BOOST_DLL_USE_STD_FS is defined (1.74 forgets to include them itself);
//  - only the throwing load() keeps the dlerror() text; the error_code
//    overloads say "Bad file descriptor" for every failure;
//  - load_mode values are the native dlopen flags, so RTLD_NODELETE passes
//    through even though Boost has no enumerator for it;
//  - a path without a directory is resolved against the current directory, so
//    only absolute paths are ever handed to it.
//
// Plugins are never unloaded. Every library that dlopen accepted is kept in a
// registry that is deliberately leaked: destroying it at exit would dlclose
// libraries whose descriptors and function tables other static objects may
// still point into.
//
// Model types claimed twice: the later plugin still loads (it may serve other
// types), lookups return the earlier one, and the later plugin also gets an
// entry in rejected() whose reason says which claim lost and to whom - so the
// `plugins` command shows it without knowing about a separate list.

// clang-format off
#include <string>
#include <vector>  // before Boost.DLL: 1.74's headers rely on it (plugin-abi.md §1.1)
// clang-format on

#include "host/plugin/loader.h"

#include <dlfcn.h>

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cctype>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "host/base/version.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
namespace dll = boost::dll;

constexpr std::string_view kEntryName = CKPTBRIDGE_PLUGIN_ENTRY_V1_NAME;
constexpr std::string_view kFilePrefix = "libckptbridge_";
constexpr std::string_view kFileSuffix = ".so";
constexpr const char* kPathVariable = "CKPTBRIDGE_PLUGIN_PATH";
constexpr const char* kDebugVariable = "CKPTBRIDGE_PLUGIN_DEBUG";

// Upper bounds for what a descriptor may claim. Anything larger is a corrupt
// or uninitialized descriptor, and reading it would run off into plugin memory.
constexpr size_t kMaxNameSize = 64;
constexpr size_t kMaxStringSize = size_t{1} << 16;
constexpr size_t kMaxListSize = 4096;

// The bytes an ABI 1.0 structure has: through the end of its last v1 field.
// Tail padding is not counted, so a plugin compiled with another packing of
// the same fields is not rejected.
constexpr size_t kDescriptorV1Size =
    offsetof(ckb_plugin_descriptor, vtable) + sizeof(ckb_plugin_descriptor::vtable);
constexpr size_t kDescriptorVersionSize =
    offsetof(ckb_plugin_descriptor, abi_minor) + sizeof(ckb_plugin_descriptor::abi_minor);
// ABI 1.1 appended the sample configs to the descriptor.
constexpr size_t kDescriptorSamplesSize = offsetof(ckb_plugin_descriptor, sample_config_count) +
                                          sizeof(ckb_plugin_descriptor::sample_config_count);
constexpr size_t kSampleV1Size =
    offsetof(ckb_sample_config, config_json) + sizeof(ckb_sample_config::config_json);
// A sample config is a tiny config.json; anything this large is garbage.
constexpr size_t kMaxSampleSize = size_t{1} << 20;
constexpr size_t kVtableV1Size =
    offsetof(ckb_plugin_vtable_v1, apply_custom) + sizeof(ckb_plugin_vtable_v1::apply_custom);

std::string AbiString(uint32_t major, uint32_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

// What went wrong with one candidate, without the path (Discover stores the
// path separately in RejectedPlugin; LoadPlugin prepends it).
struct LoadError {
  StatusCode code;
  std::string reason;
};

template <typename T>
using LoadResult = std::variant<T, LoadError>;

// --- Pinning --------------------------------------------------------------

// Never deleted, never destroyed: see the file comment.
std::vector<std::unique_ptr<dll::shared_library>>& PinnedLibraries() {
  static auto* libraries = new std::vector<std::unique_ptr<dll::shared_library>>();
  return *libraries;
}

dll::load_mode::type LoadMode() {
  dll::load_mode::type mode = dll::load_mode::rtld_now | dll::load_mode::rtld_local;
#ifdef RTLD_NODELETE
  // Undocumented but verified passthrough (plugin-abi.md §1.4): even if a
  // shared_library were destroyed, the mapping would stay.
  mode = mode | static_cast<dll::load_mode::type>(RTLD_NODELETE);
#endif
  return mode;
}

// Boost's message is "boost::dll::shared_library::load() failed (dlerror
// system message: <text>): Bad file descriptor"; only <text> helps the user.
// dlerror text usually starts with the path again, which the caller already
// prints, so that is dropped too.
std::string DlerrorText(std::string_view what, const fs::path& path) {
  constexpr std::string_view kMarker = "(dlerror system message: ";
  std::string_view text = what;
  size_t begin = what.find(kMarker);
  size_t end = what.rfind("): ");
  if (begin != std::string_view::npos && end != std::string_view::npos &&
      end > begin + kMarker.size()) {
    text = what.substr(begin + kMarker.size(), end - begin - kMarker.size());
  }
  std::string prefix = path.string() + ": ";
  if (text.substr(0, prefix.size()) == prefix) text.remove_prefix(prefix.size());
  return std::string(text);
}

// --- Host API handed to plugins ---------------------------------------------

void LogFromPlugin(void* /*ctx*/, int32_t level, ckb_str message) {
  std::string text = message.data ? std::string(message.data, message.size) : std::string();
  std::cerr << (level >= 1 ? "plugin: warning: " : "plugin: ") << text << '\n';
}

// Static storage: a plugin may keep the pointer and log later.
const ckb_host_api& HostApi() {
  static const ckb_host_api api = {
      sizeof(ckb_host_api),
      CKPTBRIDGE_ABI_MAJOR,
      CKPTBRIDGE_ABI_MINOR,
      ckb_str{kVersion, std::char_traits<char>::length(kVersion)},
      nullptr,
      &LogFromPlugin,
  };
  return api;
}

// Collects what a plugin's entry reports through the error sink.
struct EntryError {
  int32_t code = CKB_OK;
  std::string message;
  bool set = false;

  static void Set(void* ctx, int32_t code, ckb_str message) {
    auto* self = static_cast<EntryError*>(ctx);
    if (self->set) return;  // the first report is the cause; later ones are fallout
    self->set = true;
    self->code = code;
    if (message.data != nullptr) self->message.assign(message.data, message.size);
  }
  ckb_error_sink Sink() { return ckb_error_sink{sizeof(ckb_error_sink), this, &EntryError::Set}; }
};

// --- Descriptor validation ----------------------------------------------------

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

bool IsDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool IsSuffixChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
}

// MAJOR.MINOR.PATCH with an optional -prerelease and +build, as in semver; the
// identifiers after '-' and '+' are not checked further.
bool IsSemver(std::string_view v) {
  size_t plus = v.find('+');
  if (plus != std::string_view::npos) {
    std::string_view build = v.substr(plus + 1);
    if (build.empty() || !std::all_of(build.begin(), build.end(), IsSuffixChar)) return false;
    v = v.substr(0, plus);
  }
  size_t dash = v.find('-');
  if (dash != std::string_view::npos) {
    std::string_view pre = v.substr(dash + 1);
    if (pre.empty() || !std::all_of(pre.begin(), pre.end(), IsSuffixChar)) return false;
    v = v.substr(0, dash);
  }
  size_t first = v.find('.');
  if (first == std::string_view::npos) return false;
  size_t second = v.find('.', first + 1);
  if (second == std::string_view::npos) return false;
  return IsDigits(v.substr(0, first)) && IsDigits(v.substr(first + 1, second - first - 1)) &&
         IsDigits(v.substr(second + 1));
}

LoadError Invalid(std::string reason) {
  return LoadError{StatusCode::kInvalidArgument, std::move(reason)};
}

// A descriptor string, copied; `what` names the field in errors.
std::optional<LoadError> CopyString(ckb_str s, std::string_view what, size_t max_size,
                                    std::string& out) {
  if (s.size == 0) {
    out.clear();
    return std::nullopt;
  }
  if (s.data == nullptr) {
    return Invalid(std::string(what) + " has size " + std::to_string(s.size) +
                   " but a null pointer");
  }
  if (s.size > max_size) {
    return Invalid(std::string(what) + " is " + std::to_string(s.size) +
                   " bytes long, more than the " + std::to_string(max_size) + " allowed");
  }
  out.assign(s.data, s.size);
  return std::nullopt;
}

// A descriptor list of strings, each non-empty; `what` is the field name.
std::optional<LoadError> CopyList(const ckb_str* items, size_t count, std::string_view what,
                                  std::vector<std::string>& out) {
  out.clear();
  if (count == 0) return std::nullopt;
  if (items == nullptr) {
    return Invalid(std::string(what) + " has " + std::to_string(count) +
                   " entries but a null pointer");
  }
  if (count > kMaxListSize) {
    return Invalid(std::string(what) + " has " + std::to_string(count) +
                   " entries, more than the " + std::to_string(kMaxListSize) + " allowed");
  }
  for (size_t i = 0; i < count; ++i) {
    std::string item;
    std::string field = std::string(what) + "[" + std::to_string(i) + "]";
    if (auto error = CopyString(items[i], field, kMaxStringSize, item)) return error;
    if (item.empty()) return Invalid(field + " is empty");
    out.push_back(std::move(item));
  }
  return std::nullopt;
}

std::optional<LoadError> CheckVtable(const ckb_plugin_vtable_v1* vtable) {
  if (vtable == nullptr) return Invalid("descriptor has no function table (vtable is null)");
  if (vtable->struct_size < kVtableV1Size) {
    return Invalid("function table struct_size is " + std::to_string(vtable->struct_size) +
                   " bytes, an ABI " + AbiString(CKPTBRIDGE_ABI_MAJOR, 0) + " table has at least " +
                   std::to_string(kVtableV1Size));
  }
  // preset_config and apply_custom are optional by contract.
  const std::pair<const char*, bool> required[] = {
      {"create", vtable->create != nullptr},
      {"destroy", vtable->destroy != nullptr},
      {"enumerate_rules", vtable->enumerate_rules != nullptr},
      {"translate_config", vtable->translate_config != nullptr},
  };
  for (const auto& [name, present] : required) {
    if (!present) return Invalid(std::string("required function '") + name + "' is null");
  }
  return std::nullopt;
}

// The ABI 1.1 sample configs, when the descriptor is large enough to have them.
std::optional<LoadError> CopySamples(const ckb_plugin_descriptor& d, LoadedPlugin& plugin) {
  plugin.sample_configs.clear();
  if (d.struct_size < kDescriptorSamplesSize || d.sample_config_count == 0) return std::nullopt;
  const std::string who = "plugin '" + plugin.name + "' ";
  if (d.sample_configs == nullptr) {
    return Invalid(who + "has " + std::to_string(d.sample_config_count) +
                   " sample configs but a null pointer");
  }
  if (d.sample_config_count > kMaxListSize) {
    return Invalid(who + "has " + std::to_string(d.sample_config_count) +
                   " sample configs, more than the " + std::to_string(kMaxListSize) + " allowed");
  }
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < d.sample_config_count; ++i) {
    const std::string what = "sample_configs[" + std::to_string(i) + "]";
    const ckb_sample_config* c = d.sample_configs[i];
    if (c == nullptr) return Invalid(who + what + " is null");
    if (c->struct_size < kSampleV1Size) {
      return Invalid(who + what + " has struct_size " + std::to_string(c->struct_size) +
                     ", an ABI 1.1 sample config has at least " + std::to_string(kSampleV1Size) +
                     " bytes");
    }
    SampleConfig sample;
    if (auto error =
            CopyString(c->model_type, what + ".model_type", kMaxNameSize, sample.model_type)) {
      return error;
    }
    if (auto error = CopyString(c->variant, what + ".variant", kMaxNameSize, sample.variant)) {
      return error;
    }
    if (auto error =
            CopyString(c->config_json, what + ".config_json", kMaxSampleSize, sample.config_json)) {
      return error;
    }
    if (std::find(plugin.model_types.begin(), plugin.model_types.end(), sample.model_type) ==
        plugin.model_types.end()) {
      return Invalid(who + what + " is for model type '" + sample.model_type +
                     "', which the plugin does not serve");
    }
    if (sample.variant.empty()) return Invalid(who + what + " has an empty variant label");
    if (sample.config_json.empty()) return Invalid(who + what + " has an empty config");
    if (!seen.insert({sample.model_type, sample.variant}).second) {
      return Invalid(who + "has two sample configs for model type '" + sample.model_type +
                     "' variant '" + sample.variant + "'");
    }
    plugin.sample_configs.push_back(std::move(sample));
  }
  return std::nullopt;
}

std::optional<LoadError> ValidateDescriptor(const ckb_plugin_descriptor& d, LoadedPlugin& plugin) {
  const std::string host_abi = AbiString(CKPTBRIDGE_ABI_MAJOR, CKPTBRIDGE_ABI_MINOR);
  const std::string v1_size_text = "an ABI " + AbiString(CKPTBRIDGE_ABI_MAJOR, 0) +
                                   " descriptor has at least " + std::to_string(kDescriptorV1Size);
  // The version fields come first so that a plugin for another ABI is told
  // so, rather than that its (differently shaped) descriptor is too small.
  if (d.struct_size < kDescriptorVersionSize) {
    return Invalid("descriptor struct_size is " + std::to_string(d.struct_size) + " bytes, " +
                   v1_size_text);
  }
  const std::string plugin_abi = AbiString(d.abi_major, d.abi_minor);
  if (d.abi_major != CKPTBRIDGE_ABI_MAJOR) {
    return LoadError{StatusCode::kUnsupported, "plugin requires ABI " + plugin_abi +
                                                   ", this host provides ABI " + host_abi +
                                                   " (the major versions must match)"};
  }
  if (d.abi_minor > CKPTBRIDGE_ABI_MINOR) {
    return LoadError{StatusCode::kUnsupported, "plugin requires ABI " + plugin_abi +
                                                   ", this host provides ABI " + host_abi +
                                                   " (a newer ckptbridge is needed)"};
  }
  if (d.struct_size < kDescriptorV1Size) {
    return Invalid("descriptor struct_size is " + std::to_string(d.struct_size) + " bytes, " +
                   v1_size_text);
  }

  if (auto error = CopyString(d.name, "name", kMaxNameSize, plugin.name)) return error;
  if (plugin.name.empty()) return Invalid("plugin name is empty");
  if (!std::all_of(plugin.name.begin(), plugin.name.end(), IsNameChar)) {
    return Invalid("plugin name '" + plugin.name +
                   "' is not a simple identifier (lowercase letters, digits, '_' and '-')");
  }
  if (auto error = CopyString(d.version, "version", kMaxNameSize, plugin.version)) return error;
  if (plugin.version.empty()) return Invalid("plugin '" + plugin.name + "' has an empty version");
  if (!IsSemver(plugin.version)) {
    return Invalid("plugin '" + plugin.name + "' has version '" + plugin.version +
                   "', which is not semver (MAJOR.MINOR.PATCH[-suffix])");
  }
  if (auto error = CopyString(d.description, "description", kMaxStringSize, plugin.description)) {
    return error;
  }
  if (auto error = CopyList(d.model_types, d.model_type_count, "model_types", plugin.model_types)) {
    return error;
  }
  if (plugin.model_types.empty()) {
    return Invalid("plugin '" + plugin.name + "' serves no model types");
  }
  std::set<std::string_view> seen;
  for (const std::string& type : plugin.model_types) {
    if (!seen.insert(type).second) {
      return Invalid("plugin '" + plugin.name + "' lists model type '" + type + "' twice");
    }
  }
  if (auto error =
          CopyList(d.architectures, d.architecture_count, "architectures", plugin.architectures)) {
    return error;
  }
  if (auto error =
          CopyList(d.model_presets, d.model_preset_count, "model_presets", plugin.model_presets)) {
    return error;
  }
  if (auto error = CheckVtable(d.vtable)) return error;
  if (auto error = CopySamples(d, plugin)) return error;
  plugin.abi_major = d.abi_major;
  plugin.abi_minor = d.abi_minor;
  plugin.descriptor = &d;
  return std::nullopt;
}

// --- Loading ------------------------------------------------------------------

// `path` must be absolute (Boost resolves bare names against the CWD).
LoadResult<LoadedPlugin> Load(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return LoadError{StatusCode::kNotFound, "no such file"};
  if (fs::is_directory(path, ec)) return Invalid("is a directory, not a plugin file");

  auto library = std::make_unique<dll::shared_library>();
  try {
    // The throwing overload: it is the one that keeps the dlerror() text.
    library->load(path, LoadMode());
  } catch (const std::exception& e) {
    return Invalid("cannot load: " + DlerrorText(e.what(), path));
  }
  // From here on the library stays loaded whatever happens: its code may
  // already have run (static initializers), and unloading is never safe.
  dll::shared_library& lib = *library;
  PinnedLibraries().push_back(std::move(library));

  if (!lib.has(std::string(kEntryName))) {
    return Invalid("not a ckptbridge plugin (no " + std::string(kEntryName) + " export)");
  }
  using EntryFn = std::remove_pointer_t<ckb_plugin_entry_v1_fn>;
  EntryFn& entry = lib.get<EntryFn>(std::string(kEntryName));

  EntryError error;
  ckb_error_sink sink = error.Sink();
  const ckb_plugin_descriptor* descriptor = entry(&HostApi(), &sink);
  if (descriptor == nullptr) {
    if (error.message.empty()) {
      return LoadError{StatusCode::kFailedPrecondition,
                       "entry returned no descriptor and no reason"};
    }
    return LoadError{StatusCode::kFailedPrecondition,
                     "entry returned no descriptor: " + error.message};
  }
  LoadedPlugin plugin;
  plugin.path = path;
  if (auto invalid = ValidateDescriptor(*descriptor, plugin)) return *invalid;
  return plugin;
}

fs::path Absolute(const fs::path& path) {
  std::error_code ec;
  fs::path absolute = fs::absolute(path, ec);
  return (ec ? path : absolute).lexically_normal();
}

// The identity used to notice one file reached twice (through a symlink, a
// relative and an absolute spelling, or two search paths).
fs::path Identity(const fs::path& absolute) {
  std::error_code ec;
  fs::path canonical = fs::canonical(absolute, ec);
  return ec ? absolute : canonical;
}

std::string Join(const std::vector<std::string>& items, std::string_view separator) {
  std::string joined;
  for (const std::string& item : items) {
    if (!joined.empty()) joined += separator;
    joined += item;
  }
  return joined;
}

bool DebugFromEnvironment() {
  const char* value = std::getenv(kDebugVariable);
  return value != nullptr && *value != '\0' && std::string_view(value) != "0";
}

// The regular files in `dir` named libckptbridge_*.so, sorted by name (readdir
// order is unspecified, and which duplicate wins must not depend on it). `ec`
// is set when the directory could not be read to the end.
std::vector<fs::path> Candidates(const fs::path& dir, std::error_code& ec) {
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.size() <= kFilePrefix.size() + kFileSuffix.size() ||
        name.compare(0, kFilePrefix.size(), kFilePrefix) != 0 ||
        name.compare(name.size() - kFileSuffix.size(), kFileSuffix.size(), kFileSuffix) != 0) {
      continue;
    }
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;  // follows symlinks
    files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

Result<LoadedPlugin> LoadPlugin(const fs::path& file) {
  fs::path path = Absolute(file);
  LoadResult<LoadedPlugin> result = Load(path);
  if (auto* error = std::get_if<LoadError>(&result)) {
    return Status(error->code, path.string() + ": " + error->reason);
  }
  return std::get<LoadedPlugin>(std::move(result));
}

fs::path InstallPluginDir() {
  std::error_code ec;
  // Reads /proc/self/exe on Linux: the binary itself, symlinks resolved.
  fs::path exe = dll::program_location(ec);
  if (ec || exe.empty()) return {};
  return (exe.parent_path() / ".." / "lib" / "ckptbridge" / "plugins").lexically_normal();
}

// Call from one thread (at startup): dlopen is thread-safe on glibc, but the
// pinned-library registry is not guarded.
Result<PluginRegistry> PluginRegistry::Discover(const DiscoveryOptions& options) {
  PluginRegistry registry;
  std::ostream& debug_out = options.debug_stream ? *options.debug_stream : std::cerr;
  const bool debug = options.debug || DebugFromEnvironment();
  std::set<fs::path> considered;  // identities of every candidate seen so far

  auto debug_line = [&](const std::string& line) {
    if (debug) debug_out << "ckptbridge: " << line << '\n';
  };
  std::ostream& warning_out = options.warning_stream ? *options.warning_stream : std::cerr;
  auto warn = [&](const fs::path& path, const std::string& reason) {
    if (options.warn_conflicts)
      warning_out << "ckptbridge: warning: " << path.string() << ": " << reason << '\n';
  };

  // Tries one candidate. Returns the reason for an explicit --plugin file that
  // must fail discovery; directory candidates never do.
  auto consider = [&](const fs::path& path, bool explicit_file) -> std::optional<Status> {
    const std::string where = "plugin candidate " + path.string();
    if (!considered.insert(Identity(path)).second) {
      debug_line(where + ": skipped: the same file was already considered");
      return std::nullopt;
    }
    LoadResult<LoadedPlugin> result = Load(path);
    if (auto* error = std::get_if<LoadError>(&result)) {
      debug_line(where + ": rejected: " + error->reason);
      if (explicit_file) return Status(error->code, path.string() + ": " + error->reason);
      registry.rejected_.push_back({path, error->reason});
      return std::nullopt;
    }
    LoadedPlugin& plugin = std::get<LoadedPlugin>(result);
    if (const LoadedPlugin* first = registry.FindByName(plugin.name)) {
      std::string reason = "duplicate plugin name '" + plugin.name + "' (already loaded from " +
                           first->path.string() + ")";
      debug_line(where + ": rejected: " + reason);
      if (explicit_file) return InvalidArgument(path.string() + ": " + reason);
      warn(path, reason);
      registry.rejected_.push_back({path, std::move(reason)});
      return std::nullopt;
    }
    debug_line(where + ": accepted (" + plugin.name + " " + plugin.version + ", ABI " +
               AbiString(plugin.abi_major, plugin.abi_minor) + ", types " +
               Join(plugin.model_types, ",") + ")");
    for (const std::string& type : plugin.model_types) {
      const LoadedPlugin* owner = registry.FindByModelType(type);
      if (owner == nullptr) continue;
      std::string reason = "model type '" + type + "' is already served by plugin '" + owner->name +
                           "' (" + owner->path.string() + "), which is used for it; plugin '" +
                           plugin.name + "' still serves its other model types";
      debug_line(where + ": note: " + reason);
      warn(path, reason);
      registry.rejected_.push_back({path, std::move(reason)});
    }
    registry.plugins_.push_back(std::move(plugin));
    return std::nullopt;
  };

  auto search = [&](const fs::path& dir, std::string_view origin) {
    registry.searched_dirs_.push_back(dir);
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      debug_line("plugin dir " + dir.string() + " (" + std::string(origin) +
                 "): does not exist or is not a directory");
      return;
    }
    debug_line("searching plugin dir " + dir.string() + " (" + std::string(origin) + ")");
    std::vector<fs::path> files = Candidates(dir, ec);
    if (ec) debug_line("plugin dir " + dir.string() + ": cannot be read: " + ec.message());
    for (const fs::path& file : files) consider(file, false);
  };

  for (const fs::path& file : options.plugin_files) {
    if (std::optional<Status> fatal = consider(Absolute(file), true)) return *std::move(fatal);
  }
  // A relative --plugin-dir is fine: the user named it on this command line.
  for (const fs::path& dir : options.plugin_dirs) search(Absolute(dir), "--plugin-dir");
  if (options.use_environment) {
    const char* value = std::getenv(kPathVariable);
    std::string_view list = value ? value : "";
    while (!list.empty()) {
      size_t colon = list.find(':');
      std::string_view entry = list.substr(0, colon);
      list = colon == std::string_view::npos ? std::string_view() : list.substr(colon + 1);
      // Empty entries would mean the current directory to some tools; relative
      // ones would make what loads depend on where the user happens to be.
      // Neither is ever searched.
      if (entry.empty()) continue;
      fs::path dir(entry);
      if (dir.is_relative()) {
        std::string reason = std::string(kPathVariable) +
                             " entry is not an absolute path; relative entries are ignored";
        debug_line("plugin dir " + dir.string() + ": " + reason);
        registry.rejected_.push_back({dir, std::move(reason)});
        continue;
      }
      search(dir.lexically_normal(), kPathVariable);
    }
  }
  if (options.use_install_dir) {
    fs::path dir = InstallPluginDir();
    if (!dir.empty()) search(dir, "install dir");
  }
  return registry;
}

const LoadedPlugin* PluginRegistry::FindByModelType(std::string_view model_type) const {
  for (const LoadedPlugin& plugin : plugins_) {
    for (const std::string& type : plugin.model_types) {
      if (type == model_type) return &plugin;
    }
  }
  return nullptr;
}

const LoadedPlugin* PluginRegistry::FindByArchitecture(std::string_view architecture) const {
  for (const LoadedPlugin& plugin : plugins_) {
    for (const std::string& a : plugin.architectures) {
      if (a == architecture) return &plugin;
    }
  }
  return nullptr;
}

const LoadedPlugin* PluginRegistry::FindByPreset(std::string_view model_name) const {
  for (const LoadedPlugin& plugin : plugins_) {
    for (const std::string& preset : plugin.model_presets) {
      if (preset == model_name) return &plugin;
    }
  }
  return nullptr;
}

const LoadedPlugin* PluginRegistry::FindByName(std::string_view name) const {
  for (const LoadedPlugin& plugin : plugins_) {
    if (plugin.name == name) return &plugin;
  }
  return nullptr;
}

std::string PluginRegistry::Summary() const {
  if (plugins_.empty()) {
    std::vector<std::string> dirs;
    for (const fs::path& dir : searched_dirs_) dirs.push_back(dir.string());
    return "no plugins were found (searched: " +
           (dirs.empty() ? std::string("no directories") : Join(dirs, ", ")) + ")";
  }
  std::vector<std::string> entries;
  for (const LoadedPlugin& plugin : plugins_) {
    entries.push_back(plugin.name + " " + plugin.version + " (" + Join(plugin.model_types, ", ") +
                      ")");
  }
  return Join(entries, ", ");
}

}  // namespace ckptbridge
