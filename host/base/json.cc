#include "host/base/json.h"

#include <string>

#include "host/base/file.h"

namespace ckptbridge {
namespace {
struct NestsTooDeep {};
}  // namespace

std::optional<nlohmann::json> TryParseJson(std::string_view text, JsonFailure& failure) {
  using nlohmann::json;
  try {
    return json::parse(text.begin(), text.end(),
                       [](int depth, json::parse_event_t /*event*/, json& /*parsed*/) {
                         if (depth > kMaxJsonDepth) throw NestsTooDeep{};
                         return true;
                       });
  } catch (const NestsTooDeep&) {
    failure = {JsonFailure::Kind::kTooDeep, 0, ""};
  } catch (const json::parse_error& e) {
    failure = {JsonFailure::Kind::kSyntax, e.byte, e.what()};
  } catch (const json::exception& e) {
    // Not only parse_error: a number like 1e400 throws out_of_range.
    failure = {JsonFailure::Kind::kOther, 0, e.what()};
  }
  return std::nullopt;
}

Result<nlohmann::json> ParseJsonText(std::string_view text, std::string_view label) {
  JsonFailure failure;
  if (std::optional<nlohmann::json> parsed = TryParseJson(text, failure)) return *parsed;
  if (failure.kind == JsonFailure::Kind::kTooDeep) {
    return InvalidArgument(std::string(label) + ": not valid JSON: nested deeper than " +
                           std::to_string(kMaxJsonDepth) + " levels");
  }
  return InvalidArgument(std::string(label) + ": not valid JSON: " + failure.what);
}

Result<nlohmann::json> ParseJsonFile(const std::filesystem::path& path) {
  CKB_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJsonText(text, path.string());
}

}  // namespace ckptbridge
