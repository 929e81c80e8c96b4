// ckptbridge/sdk/config.hpp - reading a Hugging Face config.json with errors
// a user can act on.
//
//   sdk::Config config(json);                 // label "config.json"
//   int64_t e = config.Int("hidden_size");    // required
//   int64_t d = config.Int("head_dim", e / config.Int("num_attention_heads"));
//   bool tied = config.Bool("tie_word_embeddings", false);
//
// A missing or mistyped required key throws sdk::Error(CKB_INVALID_ARGUMENT,
// "config.json: missing integer 'hidden_size'"), which the plugin entry
// points turn into a status and a message for the host. A key present with
// JSON null counts as absent (transformers writes `"head_dim": null`).
#ifndef CKPTBRIDGE_SDK_CONFIG_HPP_
#define CKPTBRIDGE_SDK_CONFIG_HPP_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "ckptbridge/plugin_abi.h"

namespace ckptbridge::sdk {

// The one exception type plugin code throws on purpose; `code` is a CKB_*
// status. Anything else that escapes becomes CKB_INTERNAL.
class Error : public std::runtime_error {
 public:
  Error(int32_t code, std::string message) : std::runtime_error(std::move(message)), code_(code) {}
  int32_t code() const { return code_; }

 private:
  int32_t code_;
};

[[noreturn]] inline void Fail(int32_t code, std::string message) {
  throw Error(code, std::move(message));
}

class Config {
 public:
  explicit Config(nlohmann::json json, std::string label = "config.json")
      : json_(std::move(json)), label_(std::move(label)) {
    if (!json_.is_object()) Fail(CKB_INVALID_ARGUMENT, label_ + ": not a JSON object");
  }

  const nlohmann::json& json() const { return json_; }
  const std::string& label() const { return label_; }

  bool Has(std::string_view key) const {
    auto it = json_.find(key);
    return it != json_.end() && !it->is_null();
  }

  int64_t Int(std::string_view key) const {
    const nlohmann::json& v = Required(key, "integer");
    if (v.is_number_integer()) return v.get<int64_t>();
    // transformers sometimes writes integral floats (e.g. 128.0).
    // (Range first: converting a double outside int64 is undefined.)
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (d >= -9.2e18 && d <= 9.2e18 && d == static_cast<double>(static_cast<int64_t>(d))) {
        return static_cast<int64_t>(d);
      }
    }
    Fail(CKB_INVALID_ARGUMENT,
         label_ + ": '" + std::string(key) + "' must be an integer, got " + v.dump());
  }
  int64_t Int(std::string_view key, int64_t fallback) const {
    return Has(key) ? Int(key) : fallback;
  }

  // A positive integer (dimensions, counts).
  int64_t Dim(std::string_view key) const {
    int64_t v = Int(key);
    if (v <= 0) {
      Fail(CKB_INVALID_ARGUMENT,
           label_ + ": '" + std::string(key) + "' must be positive, got " + std::to_string(v));
    }
    return v;
  }

  double Number(std::string_view key) const {
    const nlohmann::json& v = Required(key, "number");
    if (!v.is_number()) {
      Fail(CKB_INVALID_ARGUMENT,
           label_ + ": '" + std::string(key) + "' must be a number, got " + v.dump());
    }
    return v.get<double>();
  }
  double Number(std::string_view key, double fallback) const {
    return Has(key) ? Number(key) : fallback;
  }

  bool Bool(std::string_view key, bool fallback) const {
    if (!Has(key)) return fallback;
    const nlohmann::json& v = json_.at(std::string(key));
    if (!v.is_boolean()) {
      Fail(CKB_INVALID_ARGUMENT,
           label_ + ": '" + std::string(key) + "' must be true or false, got " + v.dump());
    }
    return v.get<bool>();
  }

  std::string String(std::string_view key) const {
    const nlohmann::json& v = Required(key, "string");
    if (!v.is_string()) {
      Fail(CKB_INVALID_ARGUMENT,
           label_ + ": '" + std::string(key) + "' must be a string, got " + v.dump());
    }
    return v.get<std::string>();
  }
  std::string String(std::string_view key, std::string fallback) const {
    return Has(key) ? String(key) : std::move(fallback);
  }

  // A nested object (e.g. "text_config", "rope_scaling") as a Config.
  Config Object(std::string_view key) const {
    const nlohmann::json& v = Required(key, "object");
    if (!v.is_object()) {
      Fail(CKB_INVALID_ARGUMENT,
           label_ + ": '" + std::string(key) + "' must be an object, got " + v.dump());
    }
    return Config(v, label_ + ": " + std::string(key));
  }

 private:
  const nlohmann::json& Required(std::string_view key, const char* what) const {
    auto it = json_.find(key);
    if (it == json_.end() || it->is_null()) {
      Fail(CKB_INVALID_ARGUMENT, label_ + ": missing " + what + " '" + std::string(key) + "'");
    }
    return *it;
  }

  nlohmann::json json_;
  std::string label_;
};

}  // namespace ckptbridge::sdk

#endif  // CKPTBRIDGE_SDK_CONFIG_HPP_
