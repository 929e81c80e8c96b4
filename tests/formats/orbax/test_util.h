// tests/formats/orbax/test_util.h - paths, scratch folders and byte helpers
// shared by the Orbax tests.
#ifndef CKPTBRIDGE_TESTS_FORMATS_ORBAX_TEST_UTIL_H_
#define CKPTBRIDGE_TESTS_FORMATS_ORBAX_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/file.h"
#include "host/base/status.h"
#include "tests/testing/temp_dir.h"

namespace ckptbridge::orbax::testing {

namespace fs = std::filesystem;

// Real checkpoints written by Orbax / TensorStore (tests/data/fixtures/orbax).
inline fs::path OrbaxFixture(std::string_view relative) {
  return fs::path(CKPTBRIDGE_TEST_DATA_DIR) / "fixtures" / "orbax" / relative;
}

// The orbax-compat fixtures all sit below this long common path.
inline fs::path CompatFixture(std::string_view version, std::string_view kind) {
  return OrbaxFixture("orbax-compat") / version / kind / "checkpoint_metadata_present" /
         "pytree_checkpointable_has_metadata";
}

// Values extracted from the OCDBT fixtures by extract_fixture_values.py.
inline fs::path Extracted(std::string_view relative) {
  return fs::path(CKPTBRIDGE_TEST_DATA_DIR) / "orbax-extracted" / relative;
}

// A fresh folder under the system temp dir, removed with everything in it.
using ScratchDir = ::ckptbridge::testing::TempDir;

inline std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void WriteBytes(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// The bytes of a vector of trivially copyable values, and back.
template <typename T>
std::string AsBytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

template <typename T>
std::vector<T> FromBytes(std::string_view bytes) {
  std::vector<T> values(bytes.size() / sizeof(T));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}

inline std::string LittleEndian64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

inline std::string LittleEndian32(uint32_t value) {
  std::string bytes(4, '\0');
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// Unwraps a Result in a test, failing (and returning a default T) on error.
template <typename T>
T ValueOrFail(Result<T> result, std::string_view what = "") {
  EXPECT_TRUE(result.ok()) << what << ": " << result.status().message();
  if (!result.ok()) return T();
  return std::move(result).value();
}

}  // namespace ckptbridge::orbax::testing

#endif  // CKPTBRIDGE_TESTS_FORMATS_ORBAX_TEST_UTIL_H_
