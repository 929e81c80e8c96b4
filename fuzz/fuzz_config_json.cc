// fuzz/fuzz_config_json.cc - an HF config.json through what a conversion does
// with it before reading any weight: parse, pick the plugin (SelectPlugin),
// create the adapter (the plugin parses the config through the SDK), ask for
// the rules in both layer layouts and translate the config both ways.
//
// The first-party plugins of this build are loaded from its plugin folder
// (CKPTBRIDGE_FUZZ_PLUGIN_DIR). Checked: refusals are bad-input errors (a
// plugin that fails with an internal error, throws or crashes is a bug), and
// the translated configs are JSON objects.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "ckptbridge/plugin_abi.h"
#include "fuzz/fuzz_util.h"
#include "host/base/json.h"
#include "host/engine/convert.h"
#include "host/plugin/adapter.h"
#include "host/plugin/loader.h"

namespace {

using ckptbridge::fuzz::CheckRefusal;
using nlohmann::json;

const ckptbridge::PluginRegistry& Plugins() {
  static const ckptbridge::PluginRegistry registry = [] {
    ckptbridge::DiscoveryOptions options;
    options.plugin_dirs = {CKPTBRIDGE_FUZZ_PLUGIN_DIR};
    options.use_environment = false;
    options.use_install_dir = false;
    ckptbridge::Result<ckptbridge::PluginRegistry> found =
        ckptbridge::PluginRegistry::Discover(options);
    FUZZ_CHECK(found.ok());
    FUZZ_CHECK(!found->plugins().empty());
    return std::move(found).value();
  }();
  return registry;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ckptbridge::PluginRegistry& plugins = Plugins();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // As engine::ToMaxText reads it (host/base/json.h).
  ckptbridge::Result<json> parsed = ckptbridge::ParseJsonText(text, "config.json");
  if (!parsed.ok()) {
    CheckRefusal(parsed.status(), "config.json");
    return 0;
  }
  const json config = std::move(parsed).value();
  std::string model_type;
  ckptbridge::Result<const ckptbridge::LoadedPlugin*> plugin =
      ckptbridge::engine::SelectPlugin(plugins, config, "", &model_type);
  if (!plugin.ok()) {
    CheckRefusal(plugin.status(), "");
    return 0;
  }
  ckptbridge::Result<std::unique_ptr<ckptbridge::Adapter>> adapter =
      ckptbridge::Adapter::Create(**plugin, model_type, config.dump());
  if (!adapter.ok()) {
    CheckRefusal(adapter.status(), "");
    return 0;
  }
  for (const char* options : {R"({"direction":"to_maxtext","scan_layers":true})",
                              R"({"direction":"to_hf","scan_layers":false})"}) {
    ckptbridge::Result<ckptbridge::RuleSet> rules = (*adapter)->Rules(options);
    if (!rules.ok()) CheckRefusal(rules.status(), "");
  }
  for (int32_t direction : {CKB_TO_MAXTEXT, CKB_TO_HF}) {
    ckptbridge::Result<std::string> translated = (*adapter)->TranslateConfig(direction);
    if (!translated.ok()) {
      CheckRefusal(translated.status(), "");
      continue;
    }
    json parsed = json::parse(*translated, nullptr, /*allow_exceptions=*/false);
    FUZZ_CHECK(parsed.is_object());
  }
  return 0;
}
