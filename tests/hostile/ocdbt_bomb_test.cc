// OCDBT databases that are small on disk but would expand without bound:
// a tree whose interior nodes share children (2^height leaves from height+1
// nodes) and a node whose keys repeat their predecessor's 64 KiB prefix for a
// few bytes each (64 GiB of keys from a few MB of body). Found reviewing the
// B+tree walk for issue 9; both must be refused quickly as DataLoss naming
// the file.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "host/base/status.h"
#include "host/formats/orbax/ocdbt.h"
#include "host/formats/orbax/ocdbt_format.h"
#include "tests/hostile/hostile_util.h"
#include "tests/testing/temp_dir.h"

namespace ckptbridge::hostile {
namespace {

namespace fs = std::filesystem;
namespace ocdbt = orbax::ocdbt;

std::string Envelope(uint32_t magic, const std::string& body) {
  Result<std::string> encoded = ocdbt::EncodeEnvelope(magic, body, ocdbt::Config::ForOrbax());
  EXPECT_TRUE(encoded.ok());
  return *encoded;
}

// A database at `dir` whose root has height `height`; every interior node has
// two entries, "a" and "b", pointing at the same child.
void WriteSharedNodeTree(const fs::path& dir, int height) {
  fs::create_directories(dir / "d");
  std::string data;
  ocdbt::BtreeNode leaf;
  leaf.leaves.push_back({"k", false, "v", {}});
  Result<std::string> leaf_body = ocdbt::EncodeBtreeNodeBody(leaf);
  ASSERT_TRUE(leaf_body.ok());
  ocdbt::DataRef ref;
  ref.file = {"", "d/bomb"};
  ref.offset = 0;
  data = Envelope(ocdbt::kBtreeNodeMagic, *leaf_body);
  ref.length = data.size();
  for (int h = 1; h <= height; ++h) {
    ocdbt::BtreeNode node;
    node.height = static_cast<uint8_t>(h);
    for (const char* key : {"a", "b"}) {
      ocdbt::InteriorEntry entry;
      entry.key = key;
      entry.subtree_common_prefix_length = 1;
      entry.child = ref;
      entry.statistics.num_keys = uint64_t{1} << (h - 1);
      node.children.push_back(entry);
    }
    Result<std::string> body = ocdbt::EncodeBtreeNodeBody(node);
    ASSERT_TRUE(body.ok());
    const std::string encoded = Envelope(ocdbt::kBtreeNodeMagic, *body);
    ref.offset = data.size();
    ref.length = encoded.size();
    data += encoded;
  }
  SetBytes(dir / "d" / "bomb", data);

  ocdbt::Manifest manifest;
  manifest.config = ocdbt::Config::ForOrbax();
  ocdbt::BtreeGeneration version;
  version.generation = 1;
  version.root_height = static_cast<uint8_t>(height);
  version.root = ref;
  version.statistics.num_keys = uint64_t{1} << height;
  manifest.versions.push_back(version);
  Result<std::string> body = ocdbt::EncodeManifestBody(manifest);
  ASSERT_TRUE(body.ok());
  SetBytes(dir / "manifest.ocdbt", Envelope(ocdbt::kManifestMagic, *body));
}

TEST(OcdbtBombTest, SharedNodesAreRefusedBeforeTheyMultiply) {
  testing::TempDir tmp;
  // 2^40 keys if the walk followed every reference.
  WriteSharedNodeTree(tmp.path(), 40);
  const auto start = std::chrono::steady_clock::now();
  Result<std::unique_ptr<orbax::OcdbtReader>> reader = orbax::OcdbtReader::Open(tmp.path());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(reader.status().message().find((tmp / "d" / "bomb").string() + " at ["),
            std::string::npos)
      << reader.status().message();
  EXPECT_NE(reader.status().message().find("b+tree node referenced a second time, by b+tree node "),
            std::string::npos)
      << reader.status().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(OcdbtBombTest, ATreeWithoutSharingStillOpens) {
  // The same shape of height 1 with distinct children is a valid tree.
  testing::TempDir tmp;
  WriteSharedNodeTree(tmp.path(), 0);
  Result<std::unique_ptr<orbax::OcdbtReader>> reader = orbax::OcdbtReader::Open(tmp.path());
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  EXPECT_EQ((*reader)->ListKeys().size(), 1u);
}

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

TEST(OcdbtBombTest, KeysThatRepeatLongPrefixesAreCappedPerNode) {
  // A leaf of n keys, each 65535 bytes: 65533 'a's shared with the previous
  // key, then a 2-byte counter. The body is ~64 KiB + ~7 bytes a key.
  const uint64_t n = 4100;    // 4100 * 65535 bytes > 256 MiB
  std::string body(1, '\0');  // height 0
  PutVarint(body, 0);         // no data files
  PutVarint(body, n);
  auto key_tail = [](uint64_t i) {
    return std::string{static_cast<char>(i >> 8), static_cast<char>(i & 0xff)};
  };
  std::vector<uint64_t> prefix(n, 0);
  for (uint64_t i = 1; i < n; ++i) {
    prefix[i] = (i >> 8) == ((i - 1) >> 8) ? 65534 : 65533;
    PutVarint(body, prefix[i]);
  }
  for (uint64_t i = 0; i < n; ++i) PutVarint(body, 65535 - prefix[i]);
  body += std::string(65533, 'a') + key_tail(0);
  for (uint64_t i = 1; i < n; ++i) body += key_tail(i).substr(prefix[i] - 65533);
  for (uint64_t i = 0; i < n; ++i) PutVarint(body, 0);  // value lengths
  body += std::string(n, '\0');                         // value kinds: all inline
  ASSERT_LT(body.size(), 200u * 1024);

  Result<ocdbt::BtreeNode> node = ocdbt::DecodeBtreeNodeBody(body, "d/bomb at [0, +1)");
  ASSERT_FALSE(node.ok());
  EXPECT_EQ(node.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(node.status().message().find("d/bomb at [0, +1): b+tree node: the keys up to key["),
            std::string::npos)
      << node.status().message();
  EXPECT_NE(node.status().message().find("add up to more than 268435456 bytes"), std::string::npos);

  // Under the cap the same construction decodes.
  std::string small(1, '\0');
  PutVarint(small, 0);
  PutVarint(small, 3);
  PutVarint(small, 65534);
  PutVarint(small, 65534);
  PutVarint(small, 65535);
  PutVarint(small, 1);
  PutVarint(small, 1);
  small += std::string(65534, 'a') + '\x01' + '\x02' + '\x03';
  small += std::string(3, '\0') + std::string(3, '\0');
  Result<ocdbt::BtreeNode> ok = ocdbt::DecodeBtreeNodeBody(small, "d/small");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->leaves.size(), 3u);
}

}  // namespace
}  // namespace ckptbridge::hostile
