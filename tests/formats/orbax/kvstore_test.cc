#include "host/formats/orbax/kvstore.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/formats/orbax/test_util.h"

namespace ckptbridge::orbax {
namespace {

using ::ckptbridge::orbax::testing::ReadBytes;
using ::ckptbridge::orbax::testing::ScratchDir;
using ::testing::HasSubstr;

TEST(ValidateKeyTest, AcceptsTensorStoreKeys) {
  for (const char* key : {"a/zarr.json", "a/.zarray", "params.params.decoder.x/c/0/1", "b.c/0.1",
                          "step/c", "x", "a/..b", "a/b..", "...", ".hidden/c"}) {
    EXPECT_TRUE(ValidateKey(key).ok()) << key << ": " << ValidateKey(key).message();
  }
}

TEST(ValidateKeyTest, RejectsKeysThatCouldLeaveTheStore) {
  struct Case {
    std::string key;
    std::string why;
  };
  const Case cases[] = {
      {"", "empty"},
      {"../x", "\"..\" path component"},
      {"a/../../x", "\"..\" path component"},
      {"..", "\"..\" path component"},
      {"/abs", "starts with '/'"},
      {"a//b", "empty path component"},
      {"a/", "empty path component"},
      {"a/./b", "\".\" path component"},
      {".", "\".\" path component"},
      {std::string("a\0b", 3), "NUL byte"},
  };
  for (const Case& c : cases) {
    const Status status = ValidateKey(c.key);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << c.key;
    EXPECT_THAT(status.message(), HasSubstr(c.why)) << c.key;
    EXPECT_THAT(status.message(), HasSubstr("invalid key")) << c.key;
  }
}

TEST(FileKvStoreTest, WritesCreateDirectoriesAndReadBack) {
  ScratchDir dir;
  FileKvStore store(dir.path());
  ASSERT_TRUE(store.Write("w/c/0/1", "shard bytes").ok());
  ASSERT_TRUE(store.Write("w/zarr.json", "{}").ok());
  EXPECT_EQ(ReadBytes(dir / "w/c/0/1"), "shard bytes");

  Result<std::string> value = store.Read("w/c/0/1");
  ASSERT_TRUE(value.ok()) << value.status().message();
  EXPECT_EQ(*value, "shard bytes");
  EXPECT_TRUE(*store.Contains("w/zarr.json"));
  EXPECT_FALSE(*store.Contains("w/c/0/0"));
  EXPECT_FALSE(*store.Contains("nothing/here"));
  // A directory is not a value.
  EXPECT_FALSE(*store.Contains("w/c"));

  // Writing again replaces the value.
  ASSERT_TRUE(store.Write("w/c/0/1", "new").ok());
  EXPECT_EQ(*store.Read("w/c/0/1"), "new");

  // Binary values survive, NUL bytes included.
  const std::string binary("\0\x01\xff\0", 4);
  ASSERT_TRUE(store.Write("bin", binary).ok());
  EXPECT_EQ(*store.Read("bin"), binary);

  EXPECT_EQ(store.Describe("w/zarr.json"), (dir.path() / "w/zarr.json").string());
  EXPECT_EQ(store.root(), dir.path());
}

TEST(FileKvStoreTest, MissingKeyIsNotFoundNamingThePath) {
  ScratchDir dir;
  FileKvStore store(dir.path());
  Result<std::string> value = store.Read("a/c/0");
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(value.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(value.status().message(), HasSubstr((dir.path() / "a/c/0").string()));
}

TEST(FileKvStoreTest, EveryOperationValidatesTheKey) {
  ScratchDir dir;
  FileKvStore store(dir / "item");
  ASSERT_TRUE(store.Write("ok", "x").ok());
  for (const char* key : {"../escape", "/etc/passwd", "a//b", "a/./b"}) {
    EXPECT_EQ(store.Read(key).status().code(), StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(store.Contains(key).status().code(), StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(store.Write(key, "x").code(), StatusCode::kInvalidArgument) << key;
  }
  // Nothing was written outside the store.
  EXPECT_FALSE(std::filesystem::exists(dir / "escape"));
}

}  // namespace
}  // namespace ckptbridge::orbax
