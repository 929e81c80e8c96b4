#include "tests/hostile/hostile_util.h"

#include <chrono>
#include <fstream>
#include <sstream>
#include <system_error>

#include "tests/testing/testing.h"

namespace ckptbridge::hostile {

namespace fs = std::filesystem;

std::map<std::string, std::string> Snapshot(const fs::path& dir) {
  std::map<std::string, std::string> entries;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
       !ec && it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    const fs::file_status status = fs::symlink_status(path);
    std::string description;
    if (fs::is_symlink(status)) {
      description = "symlink -> " + fs::read_symlink(path).string();
    } else if (fs::is_directory(status)) {
      description = "dir";
    } else {
      description = "file " + std::to_string(fs::file_size(path)) + " bytes, mtime " +
                    std::to_string(fs::last_write_time(path).time_since_epoch().count());
    }
    entries[fs::relative(path, dir).string()] = description;
  }
  return entries;
}

::testing::AssertionResult Refuses(const std::vector<std::string>& args, const fs::path& root,
                                   const fs::path& destination, const std::string& message) {
  const std::map<std::string, std::string> before = Snapshot(root);
  const testing::CliRun run = testing::RunCli(args);
  std::ostringstream problems;
  if (run.exit_code != 2) problems << "exit code " << run.exit_code << ", expected 2; ";
  if (run.err.find(message) == std::string::npos) {
    problems << "the error output lacks \"" << message << "\"; ";
  }
  if (fs::exists(fs::symlink_status(destination))) {
    problems << destination << " exists after the failure; ";
  }
  const std::map<std::string, std::string> after = Snapshot(root);
  for (const auto& [path, description] : after) {
    auto it = before.find(path);
    if (it == before.end()) {
      problems << "created " << path << "; ";
    } else if (it->second != description) {
      problems << "changed " << path << " (" << it->second << " -> " << description << "); ";
    }
  }
  for (const auto& [path, description] : before) {
    if (!after.count(path)) problems << "removed " << path << "; ";
  }
  if (problems.str().empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << problems.str() << "\nstderr: " << run.err;
}

std::string Bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void SetBytes(const fs::path& path, const std::string& bytes) {
  // Replaces rather than rewrites: fixtures copied from a read-only tree may
  // be read-only themselves.
  std::error_code ec;
  fs::remove(path, ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

SafetensorsParts ReadSafetensors(const fs::path& path) {
  const std::string bytes = Bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return {bytes.substr(8, n), bytes.substr(8 + n)};
}

void WriteSafetensors(const fs::path& path, const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  SetBytes(path, bytes + header + data);
}

void WriteSafetensorsJson(const fs::path& path, const nlohmann::json& header,
                          const std::string& data) {
  WriteSafetensors(path, header.dump(), data);
}

}  // namespace ckptbridge::hostile
