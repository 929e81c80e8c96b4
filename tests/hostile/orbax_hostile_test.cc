// Hostile MaxText (Orbax) sources: damaged _METADATA, zarr metadata, shards,
// zstd frames and OCDBT databases, and keys that try to leave the item
// directory. Each one is converted back to HF with the CLI and must be
// refused with exit code 2 and the message naming the problem, without a
// destination and without touching anything else (hostile_util.h).
//
// The sources are the real tiny Llama 3 fixture converted to MaxText here in
// each storage layout (zarr3 in OCDBT, zarr3 files, zarr2 files), then
// damaged.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/base/checksum.h"
#include "host/formats/orbax/ocdbt_format.h"
#include "tests/hostile/hostile_util.h"
#include "tests/testing/testing.h"

namespace ckptbridge::hostile {
namespace {

namespace fs = std::filesystem;
namespace ocdbt = orbax::ocdbt;
using nlohmann::json;

const fs::path kLlama = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";
// An array of the converted checkpoint: [64, 2, 4, 16] bf16, scanned, in
// chunks [64, 1, 4, 16].
const std::string kArray = "params.params.decoder.layers.self_attention.query.kernel";

enum class Layout { kOcdbt, kZarr3Files, kZarr2Files };

// One conversion per layout for the whole suite; tests copy it.
class Sources {
 public:
  static const fs::path& Get(Layout layout) {
    static Sources* sources = new Sources();  // never destroyed: lives as long as the tests
    return sources->paths_[static_cast<int>(layout)];
  }

 private:
  Sources() {
    const std::vector<std::vector<std::string>> flags = {
        {}, {"--no-ocdbt"}, {"--no-ocdbt", "--no-zarr3"}};
    for (size_t i = 0; i < flags.size(); ++i) {
      paths_.push_back(tmp_ / ("mt" + std::to_string(i)));
      std::vector<std::string> args = {"convert", "--to", "maxtext", "--quiet"};
      args.insert(args.end(), flags[i].begin(), flags[i].end());
      args.push_back(kLlama.string());
      args.push_back(paths_.back().string());
      const testing::CliRun run = testing::RunCli(args);
      EXPECT_EQ(run.exit_code, 0) << run.err;
    }
  }
  testing::TempDir tmp_;
  std::vector<fs::path> paths_;
};

class HostileOrbaxTest : public ::testing::Test {
 protected:
  void Use(Layout layout) {
    fs::copy(Sources::Get(layout), src_, fs::copy_options::recursive);
    // A bait beside the source, where escaping keys point: it must stay
    // untouched (and unread: the refusals come before any read).
    fs::create_directories(bait_);
    SetBytes(bait_ / "zarr.json", "{}");
    SetBytes(bait_ / ".zarray", "{}");
  }

  ::testing::AssertionResult ConvertRefuses(const std::string& message) {
    return Refuses({"convert", "--to", "hf", "--quiet", src_.string(), dst_.string()}, tmp_.path(),
                   dst_, message);
  }
  std::string Item(const std::string& relative) const { return (item_ / relative).string(); }

  testing::TempDir tmp_;
  const fs::path src_ = tmp_ / "src";
  const fs::path item_ = src_ / "0" / "items";
  const fs::path dst_ = tmp_ / "dst";
  const fs::path bait_ = tmp_ / "bait";
};

class HostileOrbaxLayoutTest : public HostileOrbaxTest,
                               public ::testing::WithParamInterface<Layout> {
 protected:
  void SetUp() override { Use(GetParam()); }
};

TEST_P(HostileOrbaxLayoutTest, TheUndamagedSourceConverts) {
  const testing::CliRun run =
      testing::RunCli({"convert", "--to", "hf", "--quiet", src_.string(), dst_.string()});
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

TEST_P(HostileOrbaxLayoutTest, TruncatedMetadata) {
  const std::string whole = Bytes(item_ / "_METADATA");
  for (size_t size : {size_t{0}, whole.size() / 2, whole.size() - 1}) {
    SCOPED_TRACE("_METADATA truncated to " + std::to_string(size) + " bytes");
    SetBytes(item_ / "_METADATA", whole.substr(0, size));
    EXPECT_TRUE(ConvertRefuses(Item("_METADATA") + ": invalid JSON at byte"));
  }
}

// _METADATA leaves whose names would make keys outside the item.
TEST_P(HostileOrbaxLayoutTest, MetadataKeysThatLeaveTheItem) {
  const json metadata = json::parse(Bytes(item_ / "_METADATA"));
  const std::string zarr = GetParam() == Layout::kZarr2Files ? ".zarray" : "zarr.json";
  struct Case {
    std::vector<std::string> keys;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{".."}, "invalid key \"../" + zarr + "\": has a \"..\" path component"},
      {{"x/../../../bait"},
       "invalid key \"x/../../../bait/" + zarr +
           "\": has a \"..\" path "
           "component"},
      {{bait_.string()}, "invalid key \"" + bait_.string() + "/" + zarr + "\": starts with '/'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(json(c.keys).dump());
    json bad = metadata;
    json key_metadata = json::array();
    for (const std::string& key : c.keys) key_metadata.push_back({{"key", key}, {"key_type", 2}});
    bad["tree_metadata"]["hostile"] = {
        {"key_metadata", key_metadata},
        {"value_metadata", {{"value_type", "jax.Array"}, {"skip_deserialize", false}}}};
    SetBytes(item_ / "_METADATA", bad.dump());
    EXPECT_TRUE(ConvertRefuses(Item("_METADATA") + ": array '"));
    EXPECT_TRUE(ConvertRefuses(c.message));
  }
}

TEST_P(HostileOrbaxLayoutTest, MetadataEntriesOfTheWrongShape) {
  const json metadata = json::parse(Bytes(item_ / "_METADATA"));
  json bad = metadata;
  bad["tree_metadata"]["hostile"] = {{"key_metadata", {{{"key", "x"}, {"key_type", 7}}}},
                                     {"value_metadata", json::object()}};
  SetBytes(item_ / "_METADATA", bad.dump());
  EXPECT_TRUE(ConvertRefuses(Item("_METADATA") + ": entry \"hostile\": key_metadata entry "
                                                 "{\"key\":\"x\",\"key_type\":7} has no key_type 1 "
                                                 "(sequence) or 2 (dict)"));
  bad = metadata;
  bad["use_zarr3"] = "yes";
  SetBytes(item_ / "_METADATA", bad.dump());
  EXPECT_TRUE(ConvertRefuses(Item("_METADATA") + ": use_zarr3 is \"yes\", not a bool"));
}

// Found by fuzz_orbax_metadata: a number too large for a double made
// nlohmann throw out_of_range, which nothing caught (std::terminate).
TEST_P(HostileOrbaxLayoutTest, NumbersThatOverflowADouble) {
  const std::string metadata = Bytes(item_ / "_METADATA");
  SetBytes(item_ / "_METADATA", "{\"use_zarr3\": 1e400, " + metadata.substr(1));
  EXPECT_TRUE(ConvertRefuses(Item("_METADATA") + ": invalid JSON: "));
  EXPECT_TRUE(ConvertRefuses("number overflow parsing '1e400'"));
  SetBytes(item_ / "_METADATA", metadata);
  const fs::path step_metadata = src_ / "0" / "_CHECKPOINT_METADATA";
  SetBytes(step_metadata, "{\"init_timestamp_nsecs\": 1e400}");
  EXPECT_TRUE(ConvertRefuses(step_metadata.string() + ": invalid JSON: "));
}

// nlohmann's dump() and copies recurse once per level: 200k levels of '['
// overflowed the stack (a segfault) before the parsers refused deep nesting.
TEST_P(HostileOrbaxLayoutTest, JsonNestedTooDeep) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  const std::string metadata = Bytes(item_ / "_METADATA");
  SetBytes(item_ / "_METADATA", "{\"deep\": " + deep + ", " + metadata.substr(1));
  EXPECT_TRUE(ConvertRefuses(Item("_METADATA") + ": invalid JSON: nested deeper than 64 levels"));
  SetBytes(item_ / "_METADATA", metadata);
  const fs::path step_metadata = src_ / "0" / "_CHECKPOINT_METADATA";
  SetBytes(step_metadata, "{\"custom_metadata\": " + deep + "}");
  EXPECT_TRUE(
      ConvertRefuses(step_metadata.string() + ": invalid JSON: nested deeper than 64 levels"));
}

INSTANTIATE_TEST_SUITE_P(Layouts, HostileOrbaxLayoutTest,
                         ::testing::Values(Layout::kOcdbt, Layout::kZarr3Files,
                                           Layout::kZarr2Files),
                         [](const ::testing::TestParamInfo<Layout>& info) {
                           switch (info.param) {
                             case Layout::kOcdbt:
                               return "Ocdbt";
                             case Layout::kZarr3Files:
                               return "Zarr3Files";
                             default:
                               return "Zarr2Files";
                           }
                         });

// --- zarr metadata and chunks, one file per key ----------------------------

class HostileZarr3Test : public HostileOrbaxTest {
 protected:
  void SetUp() override { Use(Layout::kZarr3Files); }
  const fs::path zarr_json_ = item_ / kArray / "zarr.json";
  const fs::path shard_ = item_ / kArray / "c" / "0" / "1" / "0" / "0";
};

TEST_F(HostileZarr3Test, TruncatedOrMalformedZarrJson) {
  const std::string whole = Bytes(zarr_json_);
  SetBytes(zarr_json_, whole.substr(0, whole.size() / 2));
  EXPECT_TRUE(ConvertRefuses(zarr_json_.string() + ": invalid JSON at byte"));

  json metadata = json::parse(whole);
  json bad = metadata;
  bad["data_type"] = "complex128";
  SetBytes(zarr_json_, bad.dump());
  EXPECT_TRUE(ConvertRefuses(zarr_json_.string() + ": data_type \"complex128\" is not supported"));

  bad = metadata;
  bad["codecs"][0]["name"] = "blosc";
  SetBytes(zarr_json_, bad.dump());
  EXPECT_TRUE(ConvertRefuses(zarr_json_.string() + ": codec \"blosc\" is not supported"));

  bad = metadata;
  bad["chunk_grid"]["configuration"]["chunk_shape"] = {uint64_t{1} << 40, uint64_t{1} << 40, 4, 16};
  SetBytes(zarr_json_, bad.dump());
  EXPECT_TRUE(ConvertRefuses(zarr_json_.string() + ": shape [1099511627776, 1099511627776, 4, "
                                                   "16] has too many elements"));
}

// Found by fuzz_zarr_metadata (1e400: an uncaught out_of_range) and by
// review (deep nesting: a stack overflow in dump()).
TEST_F(HostileZarr3Test, NumbersThatOverflowAndDeepNesting) {
  SetBytes(zarr_json_, "{\"zarr_format\": 1e400}");
  EXPECT_TRUE(ConvertRefuses(zarr_json_.string() + ": invalid JSON: "));
  EXPECT_TRUE(ConvertRefuses("number overflow parsing '1e400'"));
  SetBytes(zarr_json_,
           "{\"zarr_format\": " + std::string(200000, '[') + std::string(200000, ']') + "}");
  EXPECT_TRUE(ConvertRefuses(zarr_json_.string() + ": invalid JSON: nested deeper than 64 levels"));
}

TEST_F(HostileZarr3Test, AbsurdArrayShapeIsAMismatchNotAnAllocation) {
  json bad = json::parse(Bytes(zarr_json_));
  bad["shape"] = {uint64_t{1} << 40, uint64_t{1} << 40, uint64_t{1} << 40, 16};
  SetBytes(zarr_json_, bad.dump());
  EXPECT_TRUE(ConvertRefuses(kArray));
  EXPECT_TRUE(ConvertRefuses("[1099511627776, 1099511627776, 1099511627776, 16]"));
}

TEST_F(HostileZarr3Test, ShardIndexCrcMismatch) {
  std::string shard = Bytes(shard_);
  shard[shard.size() - 20] ^= 1;  // a byte of the index (offset of inner chunk 0)
  SetBytes(shard_, shard);
  EXPECT_TRUE(ConvertRefuses(shard_.string() + ": shard index CRC-32C mismatch (stored 0x"));
}

// Rewrites the shard's (offset, nbytes) of its one inner chunk, with a valid
// CRC, so the damage reaches the decoder.
void SetShardIndex(const fs::path& path, uint64_t offset, uint64_t nbytes) {
  std::string shard = Bytes(path);
  std::string index;
  for (uint64_t v : {offset, nbytes}) {
    for (int i = 0; i < 8; ++i) index.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  const uint32_t crc = ComputeCrc32c(index.data(), index.size());
  for (int i = 0; i < 4; ++i) index.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  shard.replace(shard.size() - 20, 20, index);
  SetBytes(path, shard);
}

TEST_F(HostileZarr3Test, TruncatedShardsAndOffsetsOutsideTheData) {
  const std::string whole = Bytes(shard_);
  const uint64_t data = whole.size() - 20;
  SetBytes(shard_, whole.substr(0, 19));
  EXPECT_TRUE(ConvertRefuses(shard_.string() + ": shard of 19 bytes is shorter than its 20-byte "
                                               "index"));
  SetBytes(shard_, whole);
  SetShardIndex(shard_, data - 2, 10);
  EXPECT_TRUE(ConvertRefuses(shard_.string() + ": inner chunk 0: bytes [" +
                             std::to_string(data - 2) + ", +10) lie outside the shard's data [0, " +
                             std::to_string(data) + ")"));
  SetBytes(shard_, whole);
  SetShardIndex(shard_, ~uint64_t{0} - 4, 8);  // offset + nbytes overflows
  EXPECT_TRUE(ConvertRefuses("lie outside the shard's data"));
}

TEST_F(HostileZarr3Test, CorruptedZstdFrames) {
  const std::string whole = Bytes(shard_);
  const size_t frame = whole.size() - 20;
  std::string bad_magic = whole;
  bad_magic[0] ^= 0x55;
  SetBytes(shard_, bad_magic);
  EXPECT_TRUE(ConvertRefuses(shard_.string() + ": inner chunk 0: not a zstd frame"));

  // A frame cut short (the index says so, with a valid CRC).
  SetBytes(shard_, whole);
  SetShardIndex(shard_, 0, frame - 3);
  EXPECT_TRUE(ConvertRefuses(shard_.string() + ": inner chunk 0: corrupt zstd frame"));

  // A frame whose blocks are garbage.
  std::string garbage = whole;
  for (size_t i = 12; i + 1 < frame; ++i) garbage[i] = static_cast<char>(0xff);
  SetBytes(shard_, garbage);
  EXPECT_TRUE(ConvertRefuses(shard_.string() + ": inner chunk 0: corrupt zstd frame"));
}

TEST_F(HostileZarr3Test, SymlinksOutOfTheItemAreRefused) {
  // The bait holds a valid copy: following the link would "work".
  fs::copy_file(shard_, bait_ / "shard");
  fs::remove(shard_);
  fs::create_symlink(bait_ / "shard", shard_);
  EXPECT_TRUE(ConvertRefuses(shard_.string() + ": a symlink to " + (bait_ / "shard").string() +
                             ", outside " + item_.string()));
  // A linked directory leads out just the same.
  fs::remove(shard_);
  fs::copy_file(bait_ / "shard", shard_);
  fs::rename(item_ / kArray / "c", bait_ / "c");
  fs::create_symlink(bait_ / "c", item_ / kArray / "c");
  EXPECT_TRUE(ConvertRefuses("a symlink to " + (bait_ / "c").string()));
  EXPECT_TRUE(ConvertRefuses(", outside " + item_.string()));
}

class HostileZarr2Test : public HostileOrbaxTest {
 protected:
  void SetUp() override { Use(Layout::kZarr2Files); }
  const fs::path chunk_ = item_ / kArray / "0.1.0.0";
};

TEST_F(HostileZarr2Test, CorruptedAndTruncatedChunks) {
  const std::string whole = Bytes(chunk_);
  SetBytes(chunk_, whole.substr(0, whole.size() / 2));
  EXPECT_TRUE(ConvertRefuses(chunk_.string() + ": corrupt zstd frame"));
  SetBytes(chunk_, "");
  EXPECT_TRUE(ConvertRefuses(chunk_.string() + ": not a zstd frame"));
  const std::string zarray = (item_ / kArray / ".zarray").string();
  json bad = json::parse(Bytes(item_ / kArray / ".zarray"));
  bad["dtype"] = ">f4";
  SetBytes(item_ / kArray / ".zarray", bad.dump());
  EXPECT_TRUE(ConvertRefuses(zarray + ": dtype \">f4\" is not supported"));
}

// --- OCDBT -----------------------------------------------------------------

class HostileOcdbtTest : public HostileOrbaxTest {
 protected:
  void SetUp() override { Use(Layout::kOcdbt); }

  ocdbt::Manifest ReadManifest() {
    Result<std::string> body = ocdbt::DecodeEnvelope(Bytes(manifest_), ocdbt::kManifestMagic,
                                                     uint64_t{1} << 20, "manifest");
    EXPECT_TRUE(body.ok()) << body.status().message();
    Result<ocdbt::Manifest> manifest = ocdbt::DecodeManifestBody(*body, "manifest");
    EXPECT_TRUE(manifest.ok()) << manifest.status().message();
    return *manifest;
  }
  void WriteManifest(const ocdbt::Manifest& manifest) {
    Result<std::string> body = ocdbt::EncodeManifestBody(manifest);
    ASSERT_TRUE(body.ok());
    Result<std::string> file = ocdbt::EncodeEnvelope(ocdbt::kManifestMagic, *body, manifest.config);
    ASSERT_TRUE(file.ok());
    SetBytes(manifest_, *file);
  }

  const fs::path manifest_ = item_ / "manifest.ocdbt";
};

TEST_F(HostileOcdbtTest, ManifestCrcMismatchAndTruncation) {
  const std::string whole = Bytes(manifest_);
  std::string flipped = whole;
  flipped[whole.size() / 2] ^= 0x10;
  SetBytes(manifest_, flipped);
  EXPECT_TRUE(ConvertRefuses(manifest_.string() + ": CRC-32C mismatch (stored 0x"));
  SetBytes(manifest_, whole.substr(0, 15));
  EXPECT_TRUE(ConvertRefuses(manifest_.string() + ": 15 bytes, shorter than the smallest "
                                                  "envelope (16 bytes)"));
  SetBytes(manifest_, whole.substr(0, whole.size() - 1));
  EXPECT_TRUE(ConvertRefuses(manifest_.string() + ": the header says " +
                             std::to_string(whole.size()) + " bytes, but there are " +
                             std::to_string(whole.size() - 1)));
}

TEST_F(HostileOcdbtTest, RootInADataFilePathThatLeavesTheDatabase) {
  ocdbt::Manifest manifest = ReadManifest();
  const std::string original = manifest.versions.back().root.file.relative_path;
  for (const std::string& path :
       std::vector<std::string>{"../bait/" + original, "d/../../bait/x", "/etc/passwd"}) {
    SCOPED_TRACE(path);
    manifest.versions.back().root.file.relative_path = path;
    manifest.versions.back().root.file.base_path.clear();
    WriteManifest(manifest);
    EXPECT_TRUE(
        ConvertRefuses("data file path \"" + path + "\" is not inside the database directory"));
  }
}

TEST_F(HostileOcdbtTest, DataFileSymlinkOutOfTheDatabaseIsRefused) {
  const ocdbt::Manifest manifest = ReadManifest();
  const fs::path data = item_ / manifest.versions.back().root.file.FullPath();
  fs::copy_file(data, bait_ / "data");
  fs::remove(data);
  fs::create_symlink(bait_ / "data", data);
  EXPECT_TRUE(ConvertRefuses(data.string() + ": a symlink to " + (bait_ / "data").string() +
                             ", outside the database directory " + item_.string()));
}

TEST_F(HostileOcdbtTest, TruncatedDataFile) {
  const ocdbt::Manifest manifest = ReadManifest();
  const fs::path data = item_ / manifest.versions.back().root.file.FullPath();
  const std::string whole = Bytes(data);
  SetBytes(data, whole.substr(0, whole.size() - 1));
  EXPECT_TRUE(ConvertRefuses(data.string() + ": b+tree node referenced by the manifest"));
  EXPECT_TRUE(ConvertRefuses("lies past the end of the " + std::to_string(whole.size() - 1) +
                             "-byte file"));
}

}  // namespace
}  // namespace ckptbridge::hostile
