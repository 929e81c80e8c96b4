#include "host/base/json.h"

#include <string>

#include "host/base/file.h"

namespace ckptbridge {
namespace {
struct NestsTooDeep {};
}  // namespace

Result<nlohmann::json> ParseJsonText(std::string_view text, std::string_view label) {
  using nlohmann::json;
  try {
    return json::parse(text.begin(), text.end(),
                       [](int depth, json::parse_event_t /*event*/, json& /*parsed*/) {
                         if (depth > kMaxJsonDepth) throw NestsTooDeep{};
                         return true;
                       });
  } catch (const NestsTooDeep&) {
    return InvalidArgument(std::string(label) + ": not valid JSON: nested deeper than " +
                           std::to_string(kMaxJsonDepth) + " levels");
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for numbers no double holds.
    return InvalidArgument(std::string(label) + ": not valid JSON: " + e.what());
  }
}

Result<nlohmann::json> ParseJsonFile(const std::filesystem::path& path) {
  CKB_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJsonText(text, path.string());
}

}  // namespace ckptbridge
