// tests/testing/temp_dir.h - a scratch directory for one test.
#ifndef CKPTBRIDGE_TESTS_TESTING_TEMP_DIR_H_
#define CKPTBRIDGE_TESTS_TESTING_TEMP_DIR_H_

#include <filesystem>
#include <string_view>
#include <system_error>

#include "host/base/file.h"

namespace ckptbridge::testing {

// A fresh directory under the system temp dir, removed with everything in it
// on destruction.
class TempDir {
 public:
  TempDir() : path_(std::filesystem::temp_directory_path() / ("ckptbridge-test-" + RandomHex(16))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace ckptbridge::testing

#endif  // CKPTBRIDGE_TESTS_TESTING_TEMP_DIR_H_
