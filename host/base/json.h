// host/base/json.h - parsing JSON from untrusted files without crashing.
//
// nlohmann::json::parse throws more than parse_error (a number like 1e400
// throws out_of_range), and a document nested 100k levels deep parses but
// then overflows the stack in dump() or a copy. Every config.json, index and
// side file we read goes through ParseJsonText / ParseJsonFile instead.
#ifndef CKPTBRIDGE_HOST_BASE_JSON_H_
#define CKPTBRIDGE_HOST_BASE_JSON_H_

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "host/base/status.h"

namespace ckptbridge {

// Real metadata nests a handful of levels.
inline constexpr int kMaxJsonDepth = 64;

// Why a parse failed, for callers that word their own messages.
struct JsonFailure {
  enum class Kind { kTooDeep, kSyntax, kOther };
  Kind kind = Kind::kOther;
  size_t byte = 0;   // kSyntax: where the parser stopped
  std::string what;  // the parser's own message (kSyntax, kOther)
};

// The bounded parse itself: the document, or nullopt with `failure` filled
// in. Never throws. Every JSON reader of the project goes through it.
std::optional<nlohmann::json> TryParseJson(std::string_view text, JsonFailure& failure);

// Parses `text`. Errors are InvalidArgument "<label>: not valid JSON: <why>"
// (a syntax error with its byte offset, a number out of range, or nesting
// deeper than kMaxJsonDepth).
Result<nlohmann::json> ParseJsonText(std::string_view text, std::string_view label);

// Reads and parses a file; the label is its path.
Result<nlohmann::json> ParseJsonFile(const std::filesystem::path& path);

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_JSON_H_
