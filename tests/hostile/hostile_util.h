// tests/hostile/hostile_util.h - what every hostile-input test checks: the
// CLI refuses the input with exit code 2 and a specific message, leaves no
// destination behind, and changes nothing else in the test's directory (the
// source, any bait file placed beside it, the destination's parent).
#ifndef CKPTBRIDGE_TESTS_HOSTILE_HOSTILE_UTIL_H_
#define CKPTBRIDGE_TESTS_HOSTILE_HOSTILE_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ckptbridge::hostile {

// Every entry below `dir` (symlinks not followed): relative path -> type,
// size, modification time and, for symlinks, the target. Equal snapshots
// mean nothing was created, removed or written.
std::map<std::string, std::string> Snapshot(const std::filesystem::path& dir);

// Runs `ckptbridge <args...>` and checks that it exits 2 with `message` in
// its error output, that `destination` does not exist afterwards, and that
// nothing below `root` changed.
::testing::AssertionResult Refuses(const std::vector<std::string>& args,
                                   const std::filesystem::path& root,
                                   const std::filesystem::path& destination,
                                   const std::string& message);

// A .safetensors file split into its sections.
struct SafetensorsParts {
  std::string header;  // the JSON text
  std::string data;    // the data section
};
SafetensorsParts ReadSafetensors(const std::filesystem::path& path);
// Writes `header` with its 8-byte length prefix, then `data`.
void WriteSafetensors(const std::filesystem::path& path, const std::string& header,
                      const std::string& data);
// The same with a header given as JSON (keys sorted, compact).
void WriteSafetensorsJson(const std::filesystem::path& path, const nlohmann::json& header,
                          const std::string& data);

// Raw file helpers.
std::string Bytes(const std::filesystem::path& path);
void SetBytes(const std::filesystem::path& path, const std::string& bytes);

}  // namespace ckptbridge::hostile

#endif  // CKPTBRIDGE_TESTS_HOSTILE_HOSTILE_UTIL_H_
