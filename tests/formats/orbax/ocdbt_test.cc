// Tests of the OCDBT codec, reader and writer: against the databases in the
// real Orbax fixtures (which TensorStore wrote), and against databases built
// here for what no fixture has (out-of-line values, interior nodes, several
// data files, base paths, numbered manifests, corruption).
#include "host/formats/orbax/ocdbt.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "host/base/checksum.h"
#include "host/formats/orbax/ocdbt_format.h"
#include "tests/formats/orbax/test_util.h"

namespace ckptbridge::orbax {
namespace {

using ::ckptbridge::orbax::ocdbt::BtreeGeneration;
using ::ckptbridge::orbax::ocdbt::BtreeNode;
using ::ckptbridge::orbax::ocdbt::Config;
using ::ckptbridge::orbax::ocdbt::DataFileId;
using ::ckptbridge::orbax::ocdbt::DataRef;
using ::ckptbridge::orbax::ocdbt::DecodeBtreeNodeBody;
using ::ckptbridge::orbax::ocdbt::DecodeEnvelope;
using ::ckptbridge::orbax::ocdbt::DecodeManifestBody;
using ::ckptbridge::orbax::ocdbt::DecodeVersionTreeNodeBody;
using ::ckptbridge::orbax::ocdbt::EncodeBtreeNodeBody;
using ::ckptbridge::orbax::ocdbt::EncodedNode;
using ::ckptbridge::orbax::ocdbt::EncodeEnvelope;
using ::ckptbridge::orbax::ocdbt::EncodeInteriorNodes;
using ::ckptbridge::orbax::ocdbt::EncodeLeafNodes;
using ::ckptbridge::orbax::ocdbt::EncodeManifestBody;
using ::ckptbridge::orbax::ocdbt::InteriorEntry;
using ::ckptbridge::orbax::ocdbt::kBtreeNodeMagic;
using ::ckptbridge::orbax::ocdbt::kManifestMagic;
using ::ckptbridge::orbax::ocdbt::LeafEntry;
using ::ckptbridge::orbax::ocdbt::Manifest;
using ::ckptbridge::orbax::ocdbt::ManifestKind;
using ::ckptbridge::orbax::ocdbt::NumberedManifestName;
using ::ckptbridge::orbax::ocdbt::Statistics;
using ::ckptbridge::orbax::ocdbt::VersionNodeRef;
using ::ckptbridge::orbax::ocdbt::VersionTreeNode;
using ::ckptbridge::orbax::testing::CompatFixture;
using ::ckptbridge::orbax::testing::Extracted;
using ::ckptbridge::orbax::testing::OrbaxFixture;
using ::ckptbridge::orbax::testing::ReadBytes;
using ::ckptbridge::orbax::testing::ScratchDir;
using ::ckptbridge::orbax::testing::ValueOrFail;
using ::ckptbridge::orbax::testing::WriteBytes;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------
// Helpers

// Every OCDBT database in the fixtures: the top-level ones and the
// per-process ones Orbax merged them from.
std::vector<fs::path> FixtureDatabases() {
  const fs::path v0 = CompatFixture("v0_checkpoints", "direct_checkpoint");
  const fs::path v0c = CompatFixture("v0_checkpoints", "composite_checkpoint") / "state";
  const fs::path v1 = CompatFixture("v1_checkpoints", "composite_checkpoint") / "state";
  const fs::path tunix = OrbaxFixture("tunix-sft-step1/model_params");
  const fs::path missing = OrbaxFixture(
      "orbax-compat/v0_checkpoints/direct_checkpoint/critical_metadata_alterations/"
      "missing_pytree_data_file_manifest.ocdbt");
  return {v0,
          v0 / "ocdbt.process_0",
          v0c,
          v0c / "ocdbt.process_0",
          v1,
          v1 / "ocdbt.process_0",
          tunix,
          tunix / "ocdbt.process_0",
          missing / "ocdbt.process_0"};
}

std::unique_ptr<OcdbtReader> OpenOrFail(const fs::path& dir) {
  Result<std::unique_ptr<OcdbtReader>> db = OcdbtReader::Open(dir);
  EXPECT_TRUE(db.ok()) << dir << ": " << db.status().message();
  return db.ok() ? std::move(db).value() : nullptr;
}

std::string Slice(const fs::path& file, const DataRef& ref) {
  return ReadBytes(file).substr(ref.offset, ref.length);
}

// Appends `bytes` to <dir>/<relative> and says where they went.
DataRef Put(const fs::path& dir, const std::string& relative, std::string_view bytes) {
  const fs::path path = dir / relative;
  std::string content = fs::exists(path) ? ReadBytes(path) : std::string();
  DataRef ref;
  ref.file.relative_path = relative;
  ref.offset = content.size();
  ref.length = bytes.size();
  content.append(bytes);
  WriteBytes(path, content);
  return ref;
}

std::string NodeBytes(const BtreeNode& node, const Config& config = Config::ForOrbax()) {
  const std::string body = ValueOrFail(EncodeBtreeNodeBody(node));
  return ValueOrFail(EncodeEnvelope(kBtreeNodeMagic, body, config));
}

LeafEntry Inline(std::string key, std::string value) {
  LeafEntry entry;
  entry.key = std::move(key);
  entry.value = std::move(value);
  return entry;
}

LeafEntry OutOfLine(std::string key, DataRef ref) {
  LeafEntry entry;
  entry.key = std::move(key);
  entry.out_of_line = true;
  entry.ref = std::move(ref);
  return entry;
}

// A manifest whose single version has root `root` of height `height`.
Manifest OneVersion(const DataRef& root, uint8_t height, Statistics statistics = {}) {
  Manifest manifest;
  manifest.config = Config::ForOrbax();
  BtreeGeneration version;
  version.generation = 1;
  version.root_height = height;
  version.root = root;
  version.statistics = statistics;
  version.commit_time = 1'700'000'000'000'000'000;
  manifest.versions.push_back(version);
  return manifest;
}

void WriteManifest(const fs::path& dir, const Manifest& manifest,
                   const std::string& name = "manifest.ocdbt") {
  const std::string body = ValueOrFail(EncodeManifestBody(manifest));
  WriteBytes(dir / name, ValueOrFail(EncodeEnvelope(kManifestMagic, body, manifest.config)));
}

// Opening `dir` fails with DataLoss whose message names `file` and says `what`.
void ExpectDataLoss(const fs::path& dir, const fs::path& file, const std::string& what) {
  Result<std::unique_ptr<OcdbtReader>> db = OcdbtReader::Open(dir);
  ASSERT_FALSE(db.ok()) << "expected: " << what;
  EXPECT_EQ(db.status().code(), StatusCode::kDataLoss) << db.status().message();
  EXPECT_THAT(db.status().message(), HasSubstr(file.string()));
  EXPECT_THAT(db.status().message(), HasSubstr(what));
}

// A value of `size` bytes that zstd cannot shrink (for chunk-like data).
std::string Noise(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : out) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

// ---------------------------------------------------------------------------
// The fixtures: TensorStore's bytes

TEST(OcdbtFixtureTest, WorkedExampleDecodesAsDocumented) {
  // shared/docs/orbax-format.md §4.13.
  const fs::path dir = CompatFixture("v0_checkpoints", "direct_checkpoint");
  const std::string bytes = ReadBytes(dir / "manifest.ocdbt");
  ASSERT_EQ(bytes.size(), 113u);
  const std::string body =
      ValueOrFail(DecodeEnvelope(bytes, kManifestMagic, 1 << 20, "manifest.ocdbt"));
  ASSERT_EQ(body.size(), 86u);
  const Manifest manifest = ValueOrFail(DecodeManifestBody(body, "manifest.ocdbt"));
  const Config& config = manifest.config;
  EXPECT_EQ(config.uuid[0], 0x02);
  EXPECT_EQ(config.uuid[15], 0x15);
  EXPECT_EQ(config.manifest_kind, ManifestKind::kSingle);
  EXPECT_EQ(config.max_inline_value_bytes, 1024u);
  EXPECT_EQ(config.max_decoded_node_bytes, 100000000u);
  EXPECT_EQ(config.version_tree_arity_log2, 4);
  EXPECT_TRUE(config.zstd);
  EXPECT_EQ(config.zstd_level, 0);
  ASSERT_EQ(manifest.versions.size(), 1u);
  const BtreeGeneration& v = manifest.versions[0];
  EXPECT_EQ(v.generation, 1u);
  EXPECT_EQ(v.root_height, 0);
  EXPECT_EQ(v.root.file.base_path, "");
  EXPECT_EQ(v.root.file.relative_path, "d/9f51d9b77c0c771353c577b65dc7bba5");
  EXPECT_EQ(v.root.offset, 0u);
  EXPECT_EQ(v.root.length, 240u);
  EXPECT_EQ(v.statistics, (Statistics{4, 240, 0}));
  EXPECT_EQ(v.commit_time, 0x18af46e82923b7eeu);
  EXPECT_TRUE(manifest.version_nodes.empty());

  const fs::path node_file = dir / v.root.file.relative_path;
  const std::string node_body = ValueOrFail(
      DecodeEnvelope(Slice(node_file, v.root), kBtreeNodeMagic, 1 << 20, node_file.string()));
  const BtreeNode node = ValueOrFail(DecodeBtreeNodeBody(node_body, node_file.string()));
  EXPECT_EQ(node.height, 0);
  ASSERT_EQ(node.leaves.size(), 4u);
  std::vector<std::string> keys;
  std::vector<uint64_t> sizes;
  for (const LeafEntry& e : node.leaves) {
    keys.push_back(e.key);
    sizes.push_back(e.value_size());
    EXPECT_FALSE(e.out_of_line);
  }
  EXPECT_THAT(keys, ElementsAre("a/.zarray", "a/0", "b.c/.zarray", "b.c/0"));
  EXPECT_THAT(sizes, ElementsAre(164, 41, 164, 21));
  EXPECT_EQ(node.leaves[0].value, ReadBytes(Extracted("v0_a.zarray")));
  EXPECT_EQ(node.leaves[1].value, ReadBytes(Extracted("v0_a_0.bin")));
}

// §4.11: re-encoding TensorStore's decoded manifests and nodes gives back
// its bytes. Checked for every manifest and every version's root node of
// every fixture database (the per-process ones have 4 versions and a
// 4-file data file table).
TEST(OcdbtFixtureTest, ReEncodesManifestsAndNodesByteForByte) {
  // libzstd 1.5 reproduces riegeli's compressed frames too; the decompressed
  // bodies must match with any version.
  const bool same_zstd = ZSTD_versionNumber() / 100 == 105;
  int manifests = 0, nodes = 0;
  for (const fs::path& dir : FixtureDatabases()) {
    SCOPED_TRACE(dir.string());
    const std::string bytes = ReadBytes(dir / "manifest.ocdbt");
    const std::string body = ValueOrFail(DecodeEnvelope(bytes, kManifestMagic, 1 << 20, "m"));
    const Manifest manifest = ValueOrFail(DecodeManifestBody(body, "m"));
    EXPECT_EQ(ValueOrFail(EncodeManifestBody(manifest)), body);
    if (same_zstd) {
      EXPECT_EQ(ValueOrFail(EncodeEnvelope(kManifestMagic, body, manifest.config)), bytes);
    }
    ++manifests;
    for (const BtreeGeneration& version : manifest.versions) {
      const fs::path file = dir / version.root.file.FullPath();
      const std::string encoded = Slice(file, version.root);
      const std::string node_body =
          ValueOrFail(DecodeEnvelope(encoded, kBtreeNodeMagic, 1 << 20, file.string()));
      const BtreeNode node = ValueOrFail(DecodeBtreeNodeBody(node_body, file.string()));
      EXPECT_EQ(ValueOrFail(EncodeBtreeNodeBody(node)), node_body) << file;
      if (same_zstd) {
        EXPECT_EQ(ValueOrFail(EncodeEnvelope(kBtreeNodeMagic, node_body, manifest.config)),
                  encoded);
      }
      // The writer's tree builder, given the same keys and values, makes
      // the same root node (one leaf, no excluded prefix) and statistics.
      if (node.height == 0) {
        const std::vector<EncodedNode> built =
            ValueOrFail(EncodeLeafNodes(manifest.config, node.leaves, /*may_be_root=*/true));
        ASSERT_EQ(built.size(), 1u);
        EXPECT_EQ(built[0].excluded_prefix_length, 0u);
        EXPECT_EQ(built[0].statistics, version.statistics);
        if (same_zstd) {
          EXPECT_EQ(built[0].encoded, encoded);
        }
      }
      ++nodes;
    }
  }
  EXPECT_EQ(manifests, 9);
  // One version in each top-level database, 19 in the per-process ones.
  EXPECT_EQ(nodes, 4 + 19);
}

TEST(OcdbtFixtureTest, ReaderListsAndReadsEveryFixtureDatabase) {
  for (const fs::path& dir : FixtureDatabases()) {
    SCOPED_TRACE(dir.string());
    std::unique_ptr<OcdbtReader> db = OpenOrFail(dir);
    ASSERT_NE(db, nullptr);
    EXPECT_EQ(db->num_nodes(), 1u);
    const std::vector<std::string> keys = db->ListKeys();
    EXPECT_EQ(keys.size(), db->version().statistics.num_keys);
    for (const std::string& key : keys) {
      EXPECT_TRUE(ValueOrFail(db->Read(key), key).size() > 0) << key;
      EXPECT_TRUE(*db->Contains(key));
    }
    EXPECT_FALSE(*db->Contains("zzz"));
    Result<std::string> missing = db->Read("zzz");
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
    EXPECT_EQ(db->Write("x", "y").code(), StatusCode::kFailedPrecondition);
  }
  // The latest of the 4 generations of a per-process database.
  std::unique_ptr<OcdbtReader> process =
      OpenOrFail(CompatFixture("v0_checkpoints", "direct_checkpoint") / "ocdbt.process_0");
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->version().generation, 4u);
  EXPECT_EQ(process->manifest().versions.size(), 4u);
  EXPECT_THAT(process->ListKeys(), ElementsAre("a/.zarray", "a/0", "b.c/.zarray", "b.c/0"));

  std::unique_ptr<OcdbtReader> tunix = OpenOrFail(OrbaxFixture("tunix-sft-step1/model_params"));
  ASSERT_NE(tunix, nullptr);
  EXPECT_THAT(tunix->ListKeys("w1.kernel.value/"),
              ElementsAre("w1.kernel.value/.zarray", "w1.kernel.value/0.0", "w1.kernel.value/0.1",
                          "w1.kernel.value/1.0", "w1.kernel.value/1.1"));
  for (const char* key : {".zarray", "0.0", "0.1", "1.0", "1.1"}) {
    EXPECT_EQ(ValueOrFail(tunix->Read(std::string("w1.kernel.value/") + key)),
              ReadBytes(Extracted(std::string("tunix/w1.kernel.value/") + key)))
        << key;
  }
  EXPECT_EQ(tunix->StoredBytes("w1.kernel.value/"), 168u + 4 * 17);
  const auto location = ValueOrFail(tunix->Locate("w1.kernel.value/0.1"));
  EXPECT_FALSE(location.out_of_line);
  EXPECT_EQ(location.size, 17u);
  EXPECT_EQ(
      tunix->Describe("w1.kernel.value/0.1"),
      OrbaxFixture("tunix-sft-step1/model_params").string() + " OCDBT key 'w1.kernel.value/0.1'");
}

TEST(OcdbtFixtureTest, MissingManifestIsNotFound) {
  const fs::path dir = OrbaxFixture(
      "orbax-compat/v0_checkpoints/direct_checkpoint/critical_metadata_alterations/"
      "missing_pytree_data_file_manifest.ocdbt");
  Result<std::unique_ptr<OcdbtReader>> db = OcdbtReader::Open(dir);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(db.status().message(), (dir / "manifest.ocdbt").string() + ": no such file");
}

// ---------------------------------------------------------------------------
// Envelope and bodies

TEST(OcdbtCodecTest, EnvelopeRoundTripsWithAndWithoutCompression) {
  Config config = Config::ForOrbax();
  const std::string body = "body bytes " + std::string(300, 'x');
  for (bool zstd : {true, false}) {
    config.zstd = zstd;
    const std::string encoded = ValueOrFail(EncodeEnvelope(kBtreeNodeMagic, body, config));
    EXPECT_EQ(static_cast<uint8_t>(encoded[0]), 0x0c);
    EXPECT_EQ(static_cast<uint8_t>(encoded[3]), 0xde);
    EXPECT_EQ(static_cast<uint8_t>(encoded[13]), zstd ? 1 : 0);
    EXPECT_EQ(ValueOrFail(DecodeEnvelope(encoded, kBtreeNodeMagic, 1 << 20, "n")), body);
    // The wrong magic: a manifest is not a node.
    Result<std::string> wrong = DecodeEnvelope(encoded, kManifestMagic, 1 << 20, "file");
    EXPECT_EQ(wrong.status().code(), StatusCode::kDataLoss);
    EXPECT_EQ(wrong.status().message(), "file: magic 0x0cdb20de, expected 0x0cdb3a2a");
    // A body larger than the caller allows is refused, not allocated.
    Result<std::string> big = DecodeEnvelope(encoded, kBtreeNodeMagic, 100, "file");
    EXPECT_EQ(big.status().code(), StatusCode::kDataLoss);
    EXPECT_THAT(big.status().message(), HasSubstr("limit of 100"));
  }
}

TEST(OcdbtCodecTest, EnvelopeRefusesEveryKindOfDamage) {
  const Config config = Config::ForOrbax();
  const std::string good = ValueOrFail(EncodeEnvelope(kManifestMagic, "0123456789", config));
  struct Case {
    std::string bytes;
    std::string message;
  };
  std::string flipped = good;
  flipped[16] ^= 1;
  std::string long_header = good;
  long_header[4] = static_cast<char>(long_header[4] + 1);
  const std::string raw = ValueOrFail(EncodeEnvelope(kManifestMagic, "x", [] {
    Config c = Config::ForOrbax();
    c.zstd = false;
    return c;
  }()));
  auto with_crc = [](std::string bytes) {
    const uint32_t crc = ComputeCrc32c(bytes.data(), bytes.size() - 4);
    for (int i = 0; i < 4; ++i) bytes[bytes.size() - 4 + i] = static_cast<char>(crc >> (8 * i));
    return bytes;
  };
  std::string version = raw;
  version[12] = 1;
  std::string compression = raw;
  compression[13] = 7;
  // A valid CRC over a body that is not a zstd frame.
  std::string not_zstd = good;
  not_zstd[14] = 0;
  const Case cases[] = {
      {good.substr(0, 10), "10 bytes, shorter than the smallest envelope"},
      {flipped, "CRC-32C mismatch"},
      {long_header, "the header says"},
      {good.substr(0, good.size() - 1), "the header says"},
      {with_crc(version), "format version 1, expected 0"},
      {with_crc(compression), "compression 7 is neither 0 (none) nor 1 (zstd)"},
      {with_crc(not_zstd), "zstd"},
  };
  for (const Case& c : cases) {
    Result<std::string> body = DecodeEnvelope(c.bytes, kManifestMagic, 1 << 20, "dir/manifest");
    ASSERT_FALSE(body.ok()) << c.message;
    EXPECT_EQ(body.status().code(), StatusCode::kDataLoss);
    EXPECT_THAT(body.status().message(), StartsWith("dir/manifest: "));
    EXPECT_THAT(body.status().message(), HasSubstr(c.message));
  }
}

// Every prefix and many single-byte changes of real bodies: the decoders
// answer (usually DataLoss) and never read out of bounds (run under ASan).
TEST(OcdbtCodecTest, DamagedBodiesNeverCrash) {
  const fs::path dir = OrbaxFixture("tunix-sft-step1/model_params/ocdbt.process_0");
  const std::string manifest_body =
      ValueOrFail(DecodeEnvelope(ReadBytes(dir / "manifest.ocdbt"), kManifestMagic, 1 << 20, "m"));
  const Manifest manifest = ValueOrFail(DecodeManifestBody(manifest_body, "m"));
  const DataRef& root = manifest.versions.back().root;
  const std::string node_body = ValueOrFail(
      DecodeEnvelope(Slice(dir / root.file.FullPath(), root), kBtreeNodeMagic, 1 << 20, "n"));
  for (const bool is_manifest : {true, false}) {
    const std::string& body = is_manifest ? manifest_body : node_body;
    for (size_t n = 0; n < body.size(); ++n) {
      const std::string prefix = body.substr(0, n);
      const Status status = is_manifest ? DecodeManifestBody(prefix, "m").status()
                                        : DecodeBtreeNodeBody(prefix, "n").status();
      EXPECT_EQ(status.code(), StatusCode::kDataLoss) << n;
    }
    for (size_t i = 0; i < body.size(); ++i) {
      for (int value : {0x00, 0x7f, 0x80, 0xff}) {
        std::string damaged = body;
        damaged[i] = static_cast<char>(value);
        if (is_manifest) {
          DecodeManifestBody(damaged, "m").status().IgnoreError();
        } else {
          DecodeBtreeNodeBody(damaged, "n").status().IgnoreError();
        }
      }
    }
  }
}

TEST(OcdbtCodecTest, NodeBodyErrorsNameTheField) {
  BtreeNode leaf;
  leaf.leaves = {Inline("a", "1"), Inline("b", "2")};
  std::string body = ValueOrFail(EncodeBtreeNodeBody(leaf));
  // height 0, 0 files, 2 entries, prefix[1] = 0, suffix 1 1, "ab", ...
  ASSERT_EQ(body.substr(0, 7), std::string("\x00\x00\x02\x00\x01\x01"
                                           "a",
                                           7));
  std::string unordered = body;
  unordered[6] = 'b';  // "b", "b": not increasing
  Result<BtreeNode> node = DecodeBtreeNodeBody(unordered, "d/x at [0, +9)");
  EXPECT_EQ(node.status().message(),
            "d/x at [0, +9): b+tree node: key[1] does not sort after key[0] (keys must be "
            "strictly increasing)");
  std::string bad_prefix = body;
  bad_prefix[3] = 5;
  EXPECT_THAT(DecodeBtreeNodeBody(bad_prefix, "n").status().message(),
              HasSubstr("key_prefix_length[1] = 5 exceeds the previous key's length 1"));
  std::string empty = body;
  empty[2] = 0;
  EXPECT_THAT(DecodeBtreeNodeBody(empty, "n").status().message(),
              HasSubstr("num_entries 0 is outside [1, 1048576]"));
  // value_kind 2.
  std::string kind = body;
  kind[body.size() - 4] = 2;
  EXPECT_THAT(DecodeBtreeNodeBody(kind, "n").status().message(),
              HasSubstr("value_kind[0] = 2 is not 0 or 1"));
  EXPECT_THAT(DecodeBtreeNodeBody(body + "!", "n").status().message(),
              HasSubstr("1 unexpected bytes after the entries"));
  // An out-of-line value naming file 3 of a 1-file table.
  BtreeNode ool;
  DataRef ref;
  ref.file.relative_path = "d/1";
  ref.length = 5;
  ool.leaves = {OutOfLine("k", ref)};
  std::string ool_body = ValueOrFail(EncodeBtreeNodeBody(ool));
  ool_body[ool_body.size() - 2] = 3;  // data_file_id[0]
  EXPECT_THAT(DecodeBtreeNodeBody(ool_body, "n").status().message(),
              HasSubstr("data_file_id[0] = 3 is outside the data file table [0, 1)"));
  // An offset that overflows with its length.
  ref.offset = ~uint64_t{0} - 2;
  ool.leaves = {OutOfLine("k", ref)};
  EXPECT_THAT(DecodeBtreeNodeBody(ValueOrFail(EncodeBtreeNodeBody(ool)), "n").status().message(),
              HasSubstr("overflows"));
}

TEST(OcdbtCodecTest, DataFileTablesWithBasePathsRoundTrip) {
  // Sorted by base path then relative path; prefixes shared within a base
  // path and across base paths (but never past a differing base path).
  BtreeNode node;
  node.height = 1;
  const std::vector<DataFileId> files = {
      {"", "d/0123"},
      {"", "d/0199"},
      {"ocdbt.process_0/", "d/0123"},
      {"ocdbt.process_0/", "d/ab"},
      {"ocdbt.process_1/", "d/ab"},
      {"ocdbt.process_1/x/", "d/ab"},
  };
  for (size_t i = 0; i < files.size(); ++i) {
    InteriorEntry e;
    e.key = "k" + std::to_string(i);
    e.subtree_common_prefix_length = 1;
    e.child.file = files[files.size() - 1 - i];  // table order differs from entry order
    e.child.offset = i;
    e.child.length = 10 + i;
    e.statistics = {i, 2 * i, 3 * i};
    node.children.push_back(e);
  }
  const std::string body = ValueOrFail(EncodeBtreeNodeBody(node));
  const BtreeNode decoded = ValueOrFail(DecodeBtreeNodeBody(body, "n"));
  EXPECT_EQ(decoded, node);
  // Table: 6 files; prefix lengths 4 ("d/01"), 0, 18 ("ocdbt.process_0/d/"),
  // 14 ("ocdbt.process_"), 16 ("ocdbt.process_1/").
  EXPECT_EQ(body.substr(1, 6), std::string("\x06\x04\x00\x12\x0e\x10", 6));
}

TEST(OcdbtCodecTest, ManifestWithVersionNodesValidates) {
  // Generation 17 inline; generations 1-16 in a height-1 version node.
  Manifest manifest = OneVersion(DataRef{{"", "d/root"}, 0, 10}, 0, {1, 10, 0});
  manifest.versions[0].generation = 17;
  VersionNodeRef ref;
  ref.generation = 16;
  ref.location = DataRef{{"", "d/versions"}, 5, 50};
  ref.num_generations = 16;
  ref.commit_time = 123;
  ref.height = 1;
  manifest.version_nodes.push_back(ref);
  const std::string body = ValueOrFail(EncodeManifestBody(manifest));
  EXPECT_EQ(ValueOrFail(DecodeManifestBody(body, "m")), manifest);

  Manifest wrong_height = manifest;
  wrong_height.version_nodes[0].height = 2;
  EXPECT_THAT(
      DecodeManifestBody(ValueOrFail(EncodeManifestBody(wrong_height)), "m").status().message(),
      HasSubstr("does not fit last generation 17"));
  Manifest too_many_inline = manifest;
  too_many_inline.version_nodes.clear();
  too_many_inline.versions.insert(too_many_inline.versions.begin(), too_many_inline.versions[0]);
  too_many_inline.versions[0].generation = 16;
  EXPECT_THAT(
      DecodeManifestBody(ValueOrFail(EncodeManifestBody(too_many_inline)), "m").status().message(),
      HasSubstr("span more than one group of 16"));
  Manifest kind = manifest;
  kind.config.manifest_kind = ManifestKind::kNumbered;
  const Manifest config_only =
      ValueOrFail(DecodeManifestBody(ValueOrFail(EncodeManifestBody(kind)), "m"));
  EXPECT_TRUE(config_only.versions.empty());
  EXPECT_EQ(config_only.config, kind.config);
  Manifest level = manifest;
  level.config.zstd_level = 23;
  EXPECT_THAT(DecodeManifestBody(ValueOrFail(EncodeManifestBody(level)), "m").status().message(),
              HasSubstr("zstd_level 23 is outside [-131072, 22]"));
}

TEST(OcdbtCodecTest, VersionTreeNodesDecode) {
  // A version-tree leaf holds the same columns as a manifest's inline
  // versions: take them from an encoded manifest (after the 29-byte config,
  // before the empty version-node list).
  Manifest manifest = OneVersion(DataRef{{"", "d/root"}, 7, 70}, 2, {5, 70, 1000});
  BtreeGeneration second = manifest.versions[0];
  second.generation = 2;
  second.root.offset = 77;
  manifest.versions.push_back(second);
  const std::string body = ValueOrFail(EncodeManifestBody(manifest));
  const std::string columns = body.substr(29, body.size() - 29 - 1);
  const VersionTreeNode leaf =
      ValueOrFail(DecodeVersionTreeNodeBody(std::string("\x04\x00", 2) + columns, "v"));
  EXPECT_EQ(leaf.arity_log2, 4);
  EXPECT_EQ(leaf.height, 0);
  EXPECT_EQ(leaf.leaves, manifest.versions);
  EXPECT_THAT(
      DecodeVersionTreeNodeBody(std::string("\x00\x00", 2) + columns, "v").status().message(),
      HasSubstr("version_tree_arity_log2 0 is outside [1, 16]"));
  EXPECT_THAT(
      DecodeVersionTreeNodeBody(std::string("\x04\x0f", 2) + columns, "v").status().message(),
      HasSubstr("height 15 exceeds the maximum of 14"));
  // An interior node: 1 file, 1 child (generation 16, 16 generations).
  const std::string interior = std::string(
                                   "\x04\x01"
                                   "\x01\x03\x00"
                                   "d/v"
                                   "\x01\x10",
                                   10) +
                               std::string("\x00\x00\x09\x10", 4) + std::string(8, '\0');
  const VersionTreeNode node = ValueOrFail(DecodeVersionTreeNodeBody(interior, "v"));
  ASSERT_EQ(node.children.size(), 1u);
  EXPECT_EQ(node.children[0].generation, 16u);
  EXPECT_EQ(node.children[0].location.file.relative_path, "d/v");
  EXPECT_EQ(node.children[0].location.length, 9u);
  EXPECT_EQ(node.children[0].num_generations, 16u);
  EXPECT_EQ(node.children[0].height, 0);
  EXPECT_EQ(DecodeVersionTreeNodeBody(interior + "x", "v").status().code(), StatusCode::kDataLoss);
}

TEST(OcdbtCodecTest, SplitsNodesExactlyAsTensorStore) {
  // Keys "k0".."k9" with 20-byte inline values: each entry is estimated at
  // 16 + 2 + 20 = 38 bytes, and consecutive keys share 1 byte. With a
  // 100-byte limit TensorStore aims at ceil(371 / 4) = 93 bytes per node,
  // stepping back when a node would pass 100: 2 entries per node.
  Config config = Config::ForOrbax();
  config.max_decoded_node_bytes = 100;
  std::vector<LeafEntry> entries;
  for (int i = 0; i < 10; ++i) entries.push_back(Inline("k" + std::to_string(i), Noise(20, i)));
  const std::vector<EncodedNode> leaves = ValueOrFail(EncodeLeafNodes(config, entries, true));
  ASSERT_EQ(leaves.size(), 5u);
  for (size_t i = 0; i < leaves.size(); ++i) {
    EXPECT_EQ(leaves[i].inclusive_min_key, "k" + std::to_string(2 * i));
    EXPECT_EQ(leaves[i].excluded_prefix_length, 1u);  // "k"
    EXPECT_EQ(leaves[i].statistics.num_keys, 2u);
    EXPECT_EQ(leaves[i].statistics.num_tree_bytes, leaves[i].encoded.size());
    const std::string body =
        ValueOrFail(DecodeEnvelope(leaves[i].encoded, kBtreeNodeMagic, 1 << 20, "n"));
    const BtreeNode node = ValueOrFail(DecodeBtreeNodeBody(body, "n"));
    ASSERT_EQ(node.leaves.size(), 2u);
    EXPECT_EQ(node.leaves[0].key, std::to_string(2 * i));  // stored without "k"
  }
  // No limit: one root node, nothing excluded.
  config.max_decoded_node_bytes = 100000000;
  const std::vector<EncodedNode> root = ValueOrFail(EncodeLeafNodes(config, entries, true));
  ASSERT_EQ(root.size(), 1u);
  EXPECT_EQ(root[0].excluded_prefix_length, 0u);
  EXPECT_EQ(root[0].inclusive_min_key, "");
  // An interior level: at least 2 entries per node; the excluded prefix is
  // at most the smallest subtree_common_prefix_length.
  std::vector<InteriorEntry> children;
  for (const EncodedNode& leaf : leaves) {
    InteriorEntry e;
    e.key = leaf.inclusive_min_key;
    e.subtree_common_prefix_length = leaf.excluded_prefix_length;
    e.child = DataRef{{"", "d/abc"}, 0, leaf.encoded.size()};
    e.statistics = leaf.statistics;
    children.push_back(e);
  }
  config.max_decoded_node_bytes = 100;
  const std::vector<EncodedNode> interior =
      ValueOrFail(EncodeInteriorNodes(config, 1, children, true));
  // 2 + 2 + 1: TensorStore leaves the last interior node with one entry.
  ASSERT_EQ(interior.size(), 3u);
  const BtreeNode first = ValueOrFail(DecodeBtreeNodeBody(
      ValueOrFail(DecodeEnvelope(interior[0].encoded, kBtreeNodeMagic, 1 << 20, "n")), "n"));
  ASSERT_EQ(first.children.size(), 2u);
  EXPECT_EQ(interior[0].excluded_prefix_length, 1u);
  EXPECT_EQ(first.children[0].key, "0");
  EXPECT_EQ(first.children[0].subtree_common_prefix_length, 0u);
  EXPECT_EQ(interior[0].statistics.num_keys, 4u);
  EXPECT_EQ(interior[1].statistics.num_keys, 4u);
  EXPECT_EQ(interior[2].statistics.num_keys, 2u);
}

// ---------------------------------------------------------------------------
// Writer and reader

TEST(OcdbtWriterTest, InlineAndOutOfLineValuesRoundTrip) {
  ScratchDir dir;
  std::unique_ptr<OcdbtWriter> writer = ValueOrFail(OcdbtWriter::Create(dir.path()));
  ASSERT_NE(writer, nullptr);
  const std::string at_limit = Noise(1024, 1), over = Noise(1025, 2), big = Noise(70000, 3);
  ASSERT_TRUE(writer->Write("x/.zarray", "{}").ok());
  ASSERT_TRUE(writer->Write("x/0", at_limit).ok());
  ASSERT_TRUE(writer->Write("x/1", over).ok());
  ASSERT_TRUE(writer->Write("y/c/0", big).ok());
  ASSERT_TRUE(writer->Write("y/zarr.json", "old").ok());
  ASSERT_TRUE(writer->Write("y/zarr.json", "new").ok());  // replaces
  ASSERT_TRUE(writer->Write("empty", "").ok());
  EXPECT_EQ(ValueOrFail(writer->Read("y/c/0")), big);  // read back before Finish
  EXPECT_EQ(writer->Write("", "v").code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(writer->Write("z", "v").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer->Finish().code(), StatusCode::kFailedPrecondition);

  // Nothing but the manifest and one data file.
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(dir.path())) {
    if (entry.is_regular_file()) names.push_back(fs::relative(entry.path(), dir.path()).string());
  }
  ASSERT_EQ(names.size(), 2u);
  ASSERT_EQ(writer->DataFiles().size(), 1u);
  const std::string data_file = writer->DataFiles()[0];
  EXPECT_THAT(data_file, ::testing::MatchesRegex("d/[0-9a-f]{32}"));
  EXPECT_TRUE(fs::exists(dir / "manifest.ocdbt"));

  std::unique_ptr<OcdbtReader> db = OpenOrFail(dir.path());
  ASSERT_NE(db, nullptr);
  EXPECT_THAT(db->ListKeys(),
              ElementsAre("empty", "x/.zarray", "x/0", "x/1", "y/c/0", "y/zarr.json"));
  EXPECT_EQ(ValueOrFail(db->Read("x/0")), at_limit);
  EXPECT_EQ(ValueOrFail(db->Read("x/1")), over);
  EXPECT_EQ(ValueOrFail(db->Read("y/c/0")), big);
  EXPECT_EQ(ValueOrFail(db->Read("y/zarr.json")), "new");
  EXPECT_EQ(ValueOrFail(db->Read("empty")), "");
  EXPECT_FALSE(ValueOrFail(db->Locate("x/0")).out_of_line);
  const auto location = ValueOrFail(db->Locate("x/1"));
  EXPECT_TRUE(location.out_of_line);
  EXPECT_EQ(location.file, dir / data_file);
  EXPECT_EQ(location.size, 1025u);
  EXPECT_EQ(db->StoredBytes("x/"), 2u + 1024 + 1025);
  EXPECT_THAT(db->Describe("x/1"),
              HasSubstr("OCDBT key 'x/1' (" + (dir / data_file).string() + " at ["));
  // Values stored out of line can be decoded where they lie; the others not.
  for (const char* key : {"x/1", "y/c/0"}) {
    const std::optional<MappedRegion> mapped = ValueOrFail(db->Map(key));
    ASSERT_TRUE(mapped.has_value()) << key;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(mapped->data()), mapped->size()),
              ValueOrFail(db->Read(key)))
        << key;
  }
  EXPECT_FALSE(ValueOrFail(db->Map("x/0")).has_value());    // inline
  EXPECT_FALSE(ValueOrFail(db->Map("empty")).has_value());  // inline, and empty
  EXPECT_FALSE(ValueOrFail(db->Map("nope")).has_value());   // no such key

  // The manifest Orbax would write: its config, one version, statistics.
  const Manifest& manifest = db->manifest();
  EXPECT_EQ(manifest.config.manifest_kind, ManifestKind::kSingle);
  EXPECT_EQ(manifest.config.max_inline_value_bytes, 1024u);
  EXPECT_EQ(manifest.config.max_decoded_node_bytes, 100000000u);
  EXPECT_EQ(manifest.config.version_tree_arity_log2, 4);
  EXPECT_TRUE(manifest.config.zstd);
  EXPECT_EQ(manifest.config.zstd_level, 0);
  EXPECT_EQ(manifest.config, writer->config());
  ASSERT_EQ(manifest.versions.size(), 1u);
  const BtreeGeneration& v = manifest.versions[0];
  EXPECT_EQ(v, writer->version());
  EXPECT_EQ(v.generation, 1u);
  EXPECT_EQ(v.root_height, 0);
  EXPECT_EQ(v.root.file.relative_path, data_file);
  EXPECT_EQ(v.statistics.num_keys, 6u);
  EXPECT_EQ(v.statistics.num_tree_bytes, v.root.length);
  EXPECT_EQ(v.statistics.num_indirect_value_bytes, 1025u + 70000);
  // The node follows the values in the data file.
  EXPECT_EQ(v.root.offset, 1025u + 70000);
  EXPECT_EQ(fs::file_size(dir / data_file), v.root.offset + v.root.length);
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  EXPECT_LE(v.commit_time, static_cast<uint64_t>(now));
  EXPECT_GT(v.commit_time, static_cast<uint64_t>(now) - 60'000'000'000);
  EXPECT_TRUE(manifest.version_nodes.empty());
  // A second database in the same place is refused.
  EXPECT_EQ(OcdbtWriter::Create(dir.path()).status().code(), StatusCode::kFailedPrecondition);
}

TEST(OcdbtWriterTest, EmptyDatabase) {
  ScratchDir dir;
  std::unique_ptr<OcdbtWriter> writer = ValueOrFail(OcdbtWriter::Create(dir.path()));
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Finish().ok());
  std::unique_ptr<OcdbtReader> db = OpenOrFail(dir.path());
  ASSERT_NE(db, nullptr);
  EXPECT_TRUE(db->ListKeys().empty());
  EXPECT_TRUE(db->version().root.IsMissing());
  EXPECT_EQ(db->num_nodes(), 0u);
}

// Small nodes: several leaves, interior levels with excluded prefixes.
TEST(OcdbtWriterTest, ManyKeysMakeInteriorNodes) {
  ScratchDir dir;
  OcdbtWriteOptions options;
  options.max_decoded_node_bytes = 400;
  std::unique_ptr<OcdbtWriter> writer = ValueOrFail(OcdbtWriter::Create(dir.path(), options));
  ASSERT_NE(writer, nullptr);
  std::vector<std::string> keys;
  for (int layer = 0; layer < 30; ++layer) {
    const std::string name =
        "params.params.decoder.layers_" + std::to_string(layer) + ".mlp.wi_0.kernel";
    keys.push_back(name + "/zarr.json");
    for (int i = 0; i < 10; ++i) keys.push_back(name + "/c/" + std::to_string(i) + "/0");
  }
  // From 4 threads, in scrambled order.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < keys.size(); i += 4) {
        const size_t k = (i * 7919) % keys.size();
        EXPECT_TRUE(writer->Write(keys[k], "value of " + keys[k]).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(writer->Finish().ok());

  std::unique_ptr<OcdbtReader> db = OpenOrFail(dir.path());
  ASSERT_NE(db, nullptr);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(db->ListKeys(), keys);
  for (const std::string& key : keys) EXPECT_EQ(ValueOrFail(db->Read(key)), "value of " + key);
  const BtreeGeneration& v = db->version();
  EXPECT_GE(v.root_height, 2);
  EXPECT_GT(db->num_nodes(), 20u);
  EXPECT_EQ(v.statistics.num_keys, keys.size());
  EXPECT_EQ(v.statistics.num_indirect_value_bytes, 0u);
  // All values are inline: the data file holds exactly the nodes.
  ASSERT_EQ(writer->DataFiles().size(), 1u);
  EXPECT_EQ(v.statistics.num_tree_bytes, fs::file_size(dir / writer->DataFiles()[0]));
  // The root is the last node written; its children drop the prefix their
  // keys share.
  const fs::path file = dir / v.root.file.FullPath();
  const BtreeNode root = ValueOrFail(DecodeBtreeNodeBody(
      ValueOrFail(DecodeEnvelope(Slice(file, v.root), kBtreeNodeMagic, 1 << 20, "n")), "n"));
  EXPECT_EQ(root.height, v.root_height);
  EXPECT_GE(root.children.size(), 2u);
  EXPECT_EQ(root.children[0].key, keys[0]);
  uint64_t sum = 0;
  for (const InteriorEntry& e : root.children) {
    EXPECT_GT(e.subtree_common_prefix_length, 0u) << e.key;
    sum += e.statistics.num_keys;
  }
  EXPECT_EQ(sum, keys.size());
}

TEST(OcdbtWriterTest, RollsOverToNewDataFiles) {
  ScratchDir dir;
  OcdbtWriteOptions options;
  options.target_data_file_size = 4096;
  std::unique_ptr<OcdbtWriter> writer = ValueOrFail(OcdbtWriter::Create(dir.path(), options));
  ASSERT_NE(writer, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < 20; i += 4) {
        EXPECT_TRUE(writer->Write("v/" + std::to_string(i), Noise(1500, i)).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(writer->Write("huge", Noise(10000, 99)).ok());  // a file of its own
  ASSERT_TRUE(writer->Finish().ok());
  const std::vector<std::string> files = writer->DataFiles();
  EXPECT_GE(files.size(), 11u);
  uint64_t over_target = 0;
  for (const std::string& file : files) {
    if (fs::file_size(dir / file) > 4096) ++over_target;
  }
  EXPECT_EQ(over_target, 1u);  // only the huge value's file

  std::unique_ptr<OcdbtReader> db = OpenOrFail(dir.path());
  ASSERT_NE(db, nullptr);
  std::set<fs::path> used;
  for (int i = 0; i < 20; ++i) {
    const std::string key = "v/" + std::to_string(i);
    EXPECT_EQ(ValueOrFail(db->Read(key)), Noise(1500, i)) << key;
    used.insert(ValueOrFail(db->Locate(key)).file);
  }
  EXPECT_EQ(ValueOrFail(db->Read("huge")), Noise(10000, 99));
  EXPECT_GE(used.size(), 10u);
  EXPECT_EQ(db->version().statistics.num_indirect_value_bytes, 20u * 1500 + 10000);
}

// ---------------------------------------------------------------------------
// Base paths: how Orbax's merged top-level database points into the
// per-process databases (orbax-format.md §4.12).

TEST(OcdbtReaderTest, FollowsBasePathsIntoProcessDatabases) {
  ScratchDir dir;
  // A per-process database with two out-of-line values and an inline one.
  const fs::path process = dir / "ocdbt.process_0";
  {
    // Every value and the node in a data file of its own.
    OcdbtWriteOptions options;
    options.target_data_file_size = 1;
    std::unique_ptr<OcdbtWriter> writer = ValueOrFail(OcdbtWriter::Create(process, options));
    ASSERT_NE(writer, nullptr);
    ASSERT_TRUE(writer->Write("a/c/0", Noise(3000, 1)).ok());
    ASSERT_TRUE(writer->Write("a/c/1", Noise(2000, 2)).ok());
    ASSERT_TRUE(writer->Write("a/zarr.json", "{\"a\":1}").ok());
    ASSERT_TRUE(writer->Finish().ok());
  }
  std::unique_ptr<OcdbtReader> process_db = OpenOrFail(process);
  ASSERT_NE(process_db, nullptr);
  const BtreeGeneration process_root = process_db->version();
  const fs::path process_file = process / process_root.root.file.FullPath();
  const BtreeNode process_leaf = ValueOrFail(
      DecodeBtreeNodeBody(ValueOrFail(DecodeEnvelope(Slice(process_file, process_root.root),
                                                     kBtreeNodeMagic, 1 << 20, "n")),
                          "n"));
  ASSERT_EQ(process_leaf.leaves.size(), 3u);
  ASSERT_TRUE(process_leaf.leaves[0].out_of_line);
  EXPECT_EQ(process_leaf.leaves[0].ref.file.base_path, "");

  // Top level, as Orbax's merge makes it: a leaf whose out-of-line values
  // carry the base path "ocdbt.process_0/" ...
  const std::string top_file = "d/0000000000000000000000000000000a";
  BtreeNode merged;
  for (LeafEntry entry : process_leaf.leaves) {
    if (entry.out_of_line) entry.ref.file.base_path = "ocdbt.process_0/";
    merged.leaves.push_back(entry);
  }
  merged.leaves.push_back(Inline("b/zarr.json", "{\"b\":2}"));
  const DataRef merged_ref = Put(dir.path(), top_file, NodeBytes(merged));
  // ... and, under an interior root, a child that is the process
  // database's own root node: its "d/..." paths resolve below the base path
  // of the file it was read from (the transitive path).
  BtreeNode other;
  other.leaves = {Inline("c/zarr.json", "{\"c\":3}")};
  const DataRef other_ref = Put(dir.path(), top_file, NodeBytes(other));
  BtreeNode root;
  root.height = 1;
  InteriorEntry first;
  first.key = "a/";
  first.child = merged_ref;
  first.statistics = {4, merged_ref.length, 5000};
  InteriorEntry second;
  second.key = "c";
  second.child = other_ref;
  second.statistics = {1, other_ref.length, 0};
  InteriorEntry third;
  third.key = "p/";
  third.subtree_common_prefix_length = 2;  // the child stores "a/c/0", ... as is
  third.child = process_root.root;
  third.child.file.base_path = "ocdbt.process_0/";
  third.statistics = process_root.statistics;
  root.children = {first, second, third};
  // The third child's keys, seen from the top, are "p/a/c/0", ...
  const DataRef root_ref = Put(dir.path(), top_file, NodeBytes(root));
  WriteManifest(dir.path(), OneVersion(root_ref, 1));

  std::unique_ptr<OcdbtReader> db = OpenOrFail(dir.path());
  ASSERT_NE(db, nullptr);
  EXPECT_THAT(db->ListKeys(), ElementsAre("a/c/0", "a/c/1", "a/zarr.json", "b/zarr.json",
                                          "c/zarr.json", "p/a/c/0", "p/a/c/1", "p/a/zarr.json"));
  for (const char* prefix : {"", "p/"}) {
    EXPECT_EQ(ValueOrFail(db->Read(std::string(prefix) + "a/c/0")), Noise(3000, 1));
    EXPECT_EQ(ValueOrFail(db->Read(std::string(prefix) + "a/c/1")), Noise(2000, 2));
    EXPECT_EQ(ValueOrFail(db->Read(std::string(prefix) + "a/zarr.json")), "{\"a\":1}");
    EXPECT_EQ(ValueOrFail(db->Locate(std::string(prefix) + "a/c/0")).file,
              process / process_leaf.leaves[0].ref.file.relative_path);
  }
  EXPECT_EQ(db->num_nodes(), 4u);
  // Without the per-process data files the values are lost, and the error
  // says which file is missing.
  fs::remove(process / process_leaf.leaves[0].ref.file.relative_path);
  db = OpenOrFail(dir.path());
  ASSERT_NE(db, nullptr);
  Result<std::string> lost = db->Read("a/c/0");
  EXPECT_EQ(lost.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(lost.status().message(),
              StartsWith((process / process_leaf.leaves[0].ref.file.relative_path).string() +
                         ": no such file (value of OCDBT key 'a/c/0')"));
}

TEST(OcdbtReaderTest, NumberedManifestTakesTheLatestGeneration) {
  ScratchDir dir;
  BtreeNode first;
  first.leaves = {Inline("k", "first")};
  BtreeNode second;
  second.leaves = {Inline("k", "second"), Inline("l", "new")};
  const DataRef first_ref = Put(dir.path(), "d/1", NodeBytes(first));
  const DataRef second_ref = Put(dir.path(), "d/2", NodeBytes(second));
  Manifest manifest = OneVersion(first_ref, 0);
  manifest.config.manifest_kind = ManifestKind::kNumbered;
  WriteManifest(dir.path(), manifest);  // the config only
  // No numbered manifest yet.
  ExpectDataLoss(dir.path(), dir / "manifest.ocdbt", "has no manifest.<16 hex digits> file");

  manifest.config.manifest_kind = ManifestKind::kSingle;  // as TensorStore writes them
  WriteManifest(dir.path(), manifest, NumberedManifestName(1));
  BtreeGeneration v2 = manifest.versions[0];
  v2.generation = 2;
  v2.root = second_ref;
  manifest.versions.push_back(v2);
  WriteManifest(dir.path(), manifest, NumberedManifestName(2));
  EXPECT_EQ(NumberedManifestName(2), "manifest.0000000000000002");
  WriteBytes(dir / "manifest.00000000000000zz", "not a manifest");  // not a numbered name

  std::unique_ptr<OcdbtReader> db = OpenOrFail(dir.path());
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->manifest_path(), dir / "manifest.0000000000000002");
  EXPECT_EQ(db->version().generation, 2u);
  EXPECT_EQ(ValueOrFail(db->Read("k")), "second");
  EXPECT_EQ(ValueOrFail(db->Read("l")), "new");

  // A numbered manifest whose versions end at another generation.
  manifest.versions.pop_back();
  WriteManifest(dir.path(), manifest, NumberedManifestName(3));
  ExpectDataLoss(dir.path(), dir / "manifest.0000000000000003",
                 "latest generation 1 differs from the generation in the file name, 3");
  // One from another database.
  Manifest other = manifest;
  other.config.uuid[0] ^= 1;
  other.versions[0].generation = 4;
  WriteManifest(dir.path(), other, NumberedManifestName(4));
  ExpectDataLoss(dir.path(), dir / "manifest.0000000000000004", "its config differs");
}

// ---------------------------------------------------------------------------
// Corruption: DataLoss naming the file at fault, never a crash or a read
// outside the database directory.

class OcdbtCorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::unique_ptr<OcdbtWriter> writer = ValueOrFail(OcdbtWriter::Create(dir_.path()));
    ASSERT_NE(writer, nullptr);
    ASSERT_TRUE(writer->Write("a/c/0", Noise(5000, 1)).ok());
    ASSERT_TRUE(writer->Write("a/zarr.json", "{}").ok());
    ASSERT_TRUE(writer->Finish().ok());
    data_file_ = dir_ / writer->DataFiles()[0];
    root_ = writer->version().root;
  }

  // Rewrites the root leaf with `entry` as its only entry.
  void ReplaceRoot(const LeafEntry& entry) {
    BtreeNode node;
    node.leaves = {entry};
    const DataRef root = Put(dir_.path(), "d/replacement", NodeBytes(node));
    WriteManifest(dir_.path(), OneVersion(root, 0));
  }

  ScratchDir dir_;
  fs::path data_file_;
  DataRef root_;
};

TEST_F(OcdbtCorruptionTest, FlippedNodeByteFailsTheCrc) {
  std::string bytes = ReadBytes(data_file_);
  bytes[root_.offset + root_.length / 2] ^= 0x20;
  WriteBytes(data_file_, bytes);
  ExpectDataLoss(dir_.path(), data_file_, "CRC-32C mismatch");
}

TEST_F(OcdbtCorruptionTest, TruncatedDataFile) {
  fs::resize_file(data_file_, fs::file_size(data_file_) - 10);
  ExpectDataLoss(dir_.path(), data_file_, "lies past the end of the");
}

TEST_F(OcdbtCorruptionTest, BadManifestMagic) {
  std::string bytes = ReadBytes(dir_ / "manifest.ocdbt");
  bytes[0] = 0x7f;
  WriteBytes(dir_ / "manifest.ocdbt", bytes);
  ExpectDataLoss(dir_.path(), dir_ / "manifest.ocdbt", "magic 0x7fdb3a2a, expected 0x0cdb3a2a");
}

TEST_F(OcdbtCorruptionTest, TruncatedManifest) {
  std::string bytes = ReadBytes(dir_ / "manifest.ocdbt");
  WriteBytes(dir_ / "manifest.ocdbt", bytes.substr(0, bytes.size() - 7));
  ExpectDataLoss(dir_.path(), dir_ / "manifest.ocdbt", "the header says");
}

TEST_F(OcdbtCorruptionTest, ValueOffsetPastTheEndOfItsFile) {
  DataRef ref;
  ref.file.relative_path = fs::relative(data_file_, dir_.path()).string();
  ref.offset = uint64_t{1} << 40;
  ref.length = 2000;
  ReplaceRoot(OutOfLine("a/c/0", ref));
  std::unique_ptr<OcdbtReader> db = OpenOrFail(dir_.path());
  ASSERT_NE(db, nullptr);
  Result<std::string> value = db->Read("a/c/0");
  EXPECT_EQ(value.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(value.status().message(),
              StartsWith(data_file_.string() + ": value of OCDBT key "
                                               "'a/c/0' at [1099511627776, "
                                               "+2000) lies past the end"));
}

TEST_F(OcdbtCorruptionTest, DataFileTruncatedAfterOpeningIsNotMappedAndReadsAsDataLoss) {
  std::unique_ptr<OcdbtReader> db = OpenOrFail(dir_.path());
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(ValueOrFail(db->Map("a/c/0")).has_value());
  fs::resize_file(data_file_, 100);  // the value was 5000 bytes at its start
  EXPECT_FALSE(ValueOrFail(db->Map("a/c/0")).has_value());
  ScratchBuffer value;
  const Status read = db->ReadInto("a/c/0", value);
  EXPECT_EQ(read.code(), StatusCode::kDataLoss);
  EXPECT_THAT(read.message(), HasSubstr("lies past the end of the 100-byte file"));
}

TEST_F(OcdbtCorruptionTest, PathsThatLeaveTheDatabaseAreRefused) {
  struct Case {
    DataFileId file;
    std::string why;
  };
  const Case cases[] = {
      {{"", "../outside"}, "has a \"..\" component"},
      {{"ocdbt.process_0/../../", "d/x"}, "has a \"..\" component"},
      {{"", "/etc/passwd"}, "is absolute"},
      {{"", "d//x"}, "empty path component"},
      {{"./", "d/x"}, "has a \".\" component"},
      {{"", std::string("d/\0x", 4)}, "NUL byte"},
  };
  for (const Case& c : cases) {
    DataRef ref;
    ref.file = c.file;
    ref.length = 2000;
    ReplaceRoot(OutOfLine("a/c/0", ref));
    ExpectDataLoss(dir_.path(), dir_ / "d/replacement", c.why);
    // The same path for the root node itself, named by the manifest.
    DataRef root = ref;
    WriteManifest(dir_.path(), OneVersion(root, 0));
    ExpectDataLoss(dir_.path(), dir_ / "manifest.ocdbt", "is not inside the database directory");
  }
}

TEST_F(OcdbtCorruptionTest, MissingDataFile) {
  fs::remove(data_file_);
  ExpectDataLoss(dir_.path(), data_file_, "no such file (b+tree node referenced by the manifest");
}

TEST_F(OcdbtCorruptionTest, WrongHeightAndKeyOrder) {
  WriteManifest(dir_.path(), OneVersion(root_, 1));
  ExpectDataLoss(dir_.path(), data_file_, "b+tree node of height 0, but the manifest");
  // An interior node whose second child's keys sort before the first's.
  BtreeNode low;
  low.leaves = {Inline("b", "1"), Inline("d", "3")};
  BtreeNode high;
  high.leaves = {Inline("a", "2")};
  BtreeNode root;
  root.height = 1;
  InteriorEntry first;
  first.key = "b";
  first.child = Put(dir_.path(), "d/nodes", NodeBytes(low));
  InteriorEntry second;
  second.key = "c";
  second.child = Put(dir_.path(), "d/nodes", NodeBytes(high));
  root.children = {first, second};
  WriteManifest(dir_.path(), OneVersion(Put(dir_.path(), "d/nodes", NodeBytes(root)), 1));
  ExpectDataLoss(dir_.path(), dir_ / "d/nodes", "first key 'a' sorts before the lower bound 'c'");
  // A child whose keys overlap the previous child's.
  high.leaves = {Inline("c", "2")};
  root.children[1].child = Put(dir_.path(), "d/nodes", NodeBytes(high));
  WriteManifest(dir_.path(), OneVersion(Put(dir_.path(), "d/nodes", NodeBytes(root)), 1));
  ExpectDataLoss(dir_.path(), dir_ / "d/nodes", "key 'c' does not sort after 'd'");
}

}  // namespace
}  // namespace ckptbridge::orbax
