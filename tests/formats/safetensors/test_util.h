// tests/formats/safetensors/test_util.h - scratch folders and hand-built
// safetensors bytes shared by the reader and writer tests.
#ifndef CKPTBRIDGE_TESTS_FORMATS_SAFETENSORS_TEST_UTIL_H_
#define CKPTBRIDGE_TESTS_FORMATS_SAFETENSORS_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "host/base/file.h"
#include "tests/testing/temp_dir.h"

namespace ckptbridge::safetensors::testing {

namespace fs = std::filesystem;

inline fs::path FixturePath(std::string_view relative) {
  return fs::path(CKPTBRIDGE_TEST_DATA_DIR) / "fixtures" / relative;
}

// A fresh folder under the system temp dir, removed with everything in it.
using ScratchDir = ::ckptbridge::testing::TempDir;

inline std::string LittleEndian64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// A safetensors file as bytes: length prefix, `header` verbatim, `data`.
inline std::string SafetensorsBytes(std::string_view header, std::string_view data) {
  return LittleEndian64(header.size()) + std::string(header) + std::string(data);
}

inline void WriteBytes(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace ckptbridge::safetensors::testing

#endif  // CKPTBRIDGE_TESTS_FORMATS_SAFETENSORS_TEST_UTIL_H_
