// Hostile Hugging Face sources: damaged safetensors files and indexes that
// try to leave the checkpoint folder. Each one is converted with the CLI and
// must be refused with exit code 2 and the message that names the problem,
// without a destination and without touching anything else (hostile_util.h).
//
// The sources are the real MLX-written tiny Llama 3 fixture, damaged here.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/hostile/hostile_util.h"
#include "tests/testing/testing.h"

namespace ckptbridge::hostile {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kLlama = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";

class HostileSafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(src_);
    for (const char* name : {"config.json", "model.safetensors"}) {
      fs::copy_file(kLlama / name, src_ / name);
      fs::permissions(src_ / name, fs::perms::owner_write, fs::perm_options::add);
    }
    parts_ = ReadSafetensors(src_ / "model.safetensors");
    header_ = json::parse(parts_.header);
  }

  // `convert --to maxtext` of the source must be refused with `message`.
  ::testing::AssertionResult ConvertRefuses(const std::string& message) {
    return Refuses({"convert", "--to", "maxtext", "--quiet", src_.string(), dst_.string()},
                   tmp_.path(), dst_, message);
  }
  void WriteModel(const json& header, const std::string& data) {
    WriteSafetensorsJson(src_ / "model.safetensors", header, data);
  }
  std::string model() const { return (src_ / "model.safetensors").string(); }

  testing::TempDir tmp_;
  const fs::path src_ = tmp_ / "src";
  const fs::path dst_ = tmp_ / "dst";
  SafetensorsParts parts_;
  json header_;
};

TEST_F(HostileSafetensorsTest, TheUndamagedSourceConverts) {
  // The baseline every other test damages.
  EXPECT_EQ(testing::RunCli({"convert", "--to", "maxtext", "--quiet", src_.string(), dst_.string()})
                .exit_code,
            0);
}

TEST_F(HostileSafetensorsTest, TruncatedAtEverySectionBoundary) {
  const std::string whole = Bytes(src_ / "model.safetensors");
  const uint64_t n = parts_.header.size();
  const uint64_t data = parts_.data.size();
  struct Cut {
    uint64_t size;
    std::string message;
  };
  const std::vector<Cut> cuts = {
      {0, "file is 0 bytes, too short for the 8-byte header length"},
      {4, "file is 4 bytes, too short for the 8-byte header length"},
      {7, "file is 7 bytes, too short for the 8-byte header length"},
      {8, "header length " + std::to_string(n) + " exceeds the 0 bytes after the length prefix"},
      {8 + n / 2, "header length " + std::to_string(n) + " exceeds the " + std::to_string(n / 2) +
                      " bytes after the length prefix"},
      {8 + n - 1, "header length " + std::to_string(n) + " exceeds the " + std::to_string(n - 1) +
                      " bytes after the length prefix"},
      // The data section is gone or short: the first tensor (by name) that
      // ends past it is named.
      {8 + n, "exceed the 0-byte data section"},
      {8 + n + data / 2, "exceed the " + std::to_string(data / 2) + "-byte data section"},
      {8 + n + data - 1, "exceed the " + std::to_string(data - 1) + "-byte data section"},
  };
  for (const Cut& cut : cuts) {
    SCOPED_TRACE("truncated to " + std::to_string(cut.size) + " bytes");
    SetBytes(src_ / "model.safetensors", whole.substr(0, cut.size));
    EXPECT_TRUE(ConvertRefuses(model() + ": " + cut.message.substr(0, 0)));
    EXPECT_TRUE(ConvertRefuses(cut.message));
  }
}

TEST_F(HostileSafetensorsTest, HeaderLengthPastTheFile) {
  const std::string whole = Bytes(src_ / "model.safetensors");
  auto with_length = [&](uint64_t n) {
    std::string bytes = whole;
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    SetBytes(src_ / "model.safetensors", bytes);
  };
  const uint64_t after_prefix = whole.size() - 8;
  with_length(after_prefix + 1);
  EXPECT_TRUE(ConvertRefuses(model() + ": header length " + std::to_string(after_prefix + 1) +
                             " exceeds the " + std::to_string(after_prefix) +
                             " bytes after the length prefix"));
  with_length(~uint64_t{0});
  EXPECT_TRUE(ConvertRefuses(model() + ": header length 18446744073709551615 exceeds the limit "
                                       "of 100000000 bytes"));
}

TEST_F(HostileSafetensorsTest, OffsetsOutOfRangeOverlappingAndInverted) {
  const std::string k = "model.layers.1.self_attn.k_proj.weight";
  const std::string v = "model.layers.1.self_attn.v_proj.weight";
  const uint64_t data = parts_.data.size();
  ASSERT_EQ(header_[v]["data_offsets"], json({16512, 20608}));

  json past = header_;
  past[v]["data_offsets"] = {data - 4096 + 8, data + 8};
  WriteModel(past, parts_.data);
  EXPECT_TRUE(ConvertRefuses(model() + ": tensor '" + v + "': data_offsets [" +
                             std::to_string(data - 4096 + 8) + ", " + std::to_string(data + 8) +
                             ") exceed the " + std::to_string(data) + "-byte data section"));

  json overlap = header_;
  overlap[k]["data_offsets"] = {16512, 20608};  // v's bytes
  WriteModel(overlap, parts_.data);
  EXPECT_TRUE(ConvertRefuses(model() + ": tensor '" + v +
                             "': data_offsets [16512, 20608) overlap tensor '" + k +
                             "' at [16512, 20608)"));

  json inverted = header_;
  inverted[v]["data_offsets"] = {20608, 16512};
  WriteModel(inverted, parts_.data);
  EXPECT_TRUE(ConvertRefuses("tensor '" + v +
                             "': data_offsets [20608, 16512) end before they "
                             "begin"));

  json hole = header_;
  hole[v]["shape"] = {16, 64};
  hole[v]["data_offsets"] = {16512, 18560};
  WriteModel(hole, parts_.data);
  EXPECT_TRUE(ConvertRefuses(model() +
                             ": bytes [18560, 20608) of the data section belong to no "
                             "tensor (hole before tensor '" +
                             k + "')"));

  json negative = header_;
  negative[v]["data_offsets"] = {-1, 20608};
  WriteModel(negative, parts_.data);
  EXPECT_TRUE(ConvertRefuses("data_offsets must be [begin, end] with non-negative integers"));
}

TEST_F(HostileSafetensorsTest, AbsurdShapesThatOverflowNumelTimesSize) {
  const std::string v = "model.layers.1.self_attn.v_proj.weight";
  struct Case {
    json shape;
    std::string message;
  };
  const std::vector<Case> cases = {
      // 2^62 elements of 2 bytes: the byte count overflows.
      {{uint64_t{1} << 62}, "shape [4611686018427387904] is too large"},
      // The element count itself overflows.
      {{uint64_t{1} << 31, uint64_t{1} << 31, uint64_t{1} << 31}, "has too many elements"},
      // Past int64.
      {{uint64_t{1} << 63}, "shape [9223372036854775808] is too large"},
      {{-32, 64}, "negative dimension in shape [-32, 64]"},
      {{32.5, 64}, "shape must be an array of integers"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.shape.dump());
    json header = header_;
    header[v]["shape"] = c.shape;
    WriteModel(header, parts_.data);
    EXPECT_TRUE(ConvertRefuses(model() + ": tensor '" + v + "'"));
    EXPECT_TRUE(ConvertRefuses(c.message));
  }
}

TEST_F(HostileSafetensorsTest, DuplicateKeys) {
  const std::string v = "model.layers.1.self_attn.v_proj.weight";
  // The same tensor twice: nlohmann would keep the last silently.
  const std::string entry = "\"" + v + "\":" + header_[v].dump();
  WriteSafetensors(src_ / "model.safetensors", "{" + entry + "," + parts_.header.substr(1),
                   parts_.data);
  EXPECT_TRUE(ConvertRefuses(model() + ": duplicate key '" + v + "' in the header"));

  // A field twice inside one entry.
  json header = header_;
  header.erase(v);
  std::string text = header.dump();
  text.insert(1, "\"" + v + "\":{\"dtype\":\"BF16\",\"dtype\":\"F32\",\"shape\":[32,64]," +
                     "\"data_offsets\":[16512,20608]},");
  WriteSafetensors(src_ / "model.safetensors", text, parts_.data);
  EXPECT_TRUE(ConvertRefuses(model() + ": duplicate key 'dtype' in entry '" + v + "'"));
}

TEST_F(HostileSafetensorsTest, UnknownAndUnsupportedDTypes) {
  const std::string v = "model.layers.1.self_attn.v_proj.weight";
  json unknown = header_;
  unknown[v]["dtype"] = "F128";
  WriteModel(unknown, parts_.data);
  EXPECT_TRUE(ConvertRefuses(model() + ": tensor '" + v + "': unknown dtype 'F128'"));

  json spec_only = header_;
  spec_only[v]["dtype"] = "F8_E4M3FNUZ";
  WriteModel(spec_only, parts_.data);
  EXPECT_TRUE(ConvertRefuses(model() + ": tensor '" + v +
                             "': dtype 'F8_E4M3FNUZ' is not "
                             "supported"));

  json not_a_string = header_;
  not_a_string[v]["dtype"] = 7;
  WriteModel(not_a_string, parts_.data);
  EXPECT_TRUE(ConvertRefuses("tensor '" + v + "': dtype must be a string, found 7"));
}

TEST_F(HostileSafetensorsTest, HeaderThatIsNotJsonOrNestsTooDeep) {
  WriteSafetensors(src_ / "model.safetensors", std::string("{\"a\":") + std::string(1, '\0') + "}",
                   "");
  EXPECT_TRUE(ConvertRefuses(model() + ": invalid JSON: NUL byte at offset 5"));
  WriteSafetensors(src_ / "model.safetensors", "{\"a\":" + std::string(100000, '[') + "}", "");
  EXPECT_TRUE(ConvertRefuses(model() + ": invalid JSON: nested deeper than 32 levels"));
  WriteSafetensors(src_ / "model.safetensors", " {}", "");
  EXPECT_TRUE(ConvertRefuses(model() + ": header is not a JSON object starting with '{'"));
}

// --- model.safetensors.index.json -----------------------------------------

class HostileIndexTest : public HostileSafetensorsTest {
 protected:
  void SetUp() override {
    HostileSafetensorsTest::SetUp();
    // The one shard under an index, and a bait beside the source: a valid
    // copy that an index must not be able to reach.
    fs::rename(src_ / "model.safetensors", src_ / kShard);
    fs::create_directories(bait_);
    fs::copy_file(src_ / kShard, bait_ / kShard);
  }

  // An index mapping every tensor of the fixture to `shard`.
  void WriteIndex(const std::string& shard) {
    json weight_map = json::object();
    for (const auto& [name, entry] : header_.items()) {
      if (name != "__metadata__") weight_map[name] = shard;
    }
    SetBytes(src_ / "model.safetensors.index.json",
             json({{"metadata", {{"total_size", parts_.data.size()}}}, {"weight_map", weight_map}})
                 .dump());
  }

  static constexpr const char* kShard = "model-00001-of-00001.safetensors";
  const fs::path bait_ = tmp_ / "bait";
};

TEST_F(HostileIndexTest, TheUndamagedIndexConverts) {
  WriteIndex(kShard);
  EXPECT_EQ(testing::RunCli({"convert", "--to", "maxtext", "--quiet", src_.string(), dst_.string()})
                .exit_code,
            0);
}

TEST_F(HostileIndexTest, ShardNamesOutsideTheFolderAreRefusedBeforeAnyRead) {
  const std::string index = (src_ / "model.safetensors.index.json").string();
  for (const std::string& shard :
       {"../bait/" + std::string(kShard), (bait_ / kShard).string(), std::string(".."),
        std::string("sub/") + kShard, std::string("..\\bait\\") + kShard}) {
    SCOPED_TRACE(shard);
    WriteIndex(shard);
    EXPECT_TRUE(ConvertRefuses(index + ": weight_map entry '"));
    EXPECT_TRUE(ConvertRefuses("names shard '" + shard +
                               "', which is not a plain file name in the folder"));
  }
}

TEST_F(HostileIndexTest, ShardSymlinkThatEscapesTheFolderIsRefused) {
  fs::remove(src_ / kShard);
  fs::create_symlink(bait_ / kShard, src_ / kShard);
  WriteIndex(kShard);
  EXPECT_TRUE(ConvertRefuses((src_ / kShard).string() + ": a symlink to " +
                             (bait_ / kShard).string() + ", outside the checkpoint folder"));
  // The same without an index: the folder's own model.safetensors.
  fs::remove(src_ / "model.safetensors.index.json");
  fs::rename(src_ / kShard, src_ / "model.safetensors");
  EXPECT_TRUE(ConvertRefuses((src_ / "model.safetensors").string() + ": a symlink to " +
                             (bait_ / kShard).string() + ", outside the checkpoint folder"));
}

TEST_F(HostileIndexTest, SymlinksOfTheHuggingFaceCacheLayoutAreFollowed) {
  // huggingface_hub keeps files in <repo>/blobs and links them from
  // <repo>/snapshots/<revision>/: a link into the repository's blobs is not
  // an escape.
  const fs::path repo = tmp_ / "models--tiny--llama";
  const fs::path snapshot = repo / "snapshots" / "0123abcd";
  fs::create_directories(repo / "blobs");
  fs::create_directories(snapshot);
  fs::copy_file(src_ / kShard, repo / "blobs" / "5f2c");
  fs::create_symlink("../../blobs/5f2c", snapshot / "model.safetensors");
  fs::copy_file(src_ / "config.json", snapshot / "config.json");
  testing::CliRun run =
      testing::RunCli({"convert", "--to", "maxtext", "--quiet", snapshot.string(), dst_.string()});
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

TEST_F(HostileIndexTest, DuplicateKeysAndMalformedEntries) {
  const std::string index = (src_ / "model.safetensors.index.json").string();
  const std::string v = "model.layers.1.self_attn.v_proj.weight";
  SetBytes(src_ / "model.safetensors.index.json", "{\"weight_map\":{\"" + v + "\":\"" + kShard +
                                                      "\",\"" + v + "\":\"other.safetensors\"}}");
  EXPECT_TRUE(ConvertRefuses(index + ": duplicate key '" + v + "' in entry 'weight_map'"));

  SetBytes(src_ / "model.safetensors.index.json", "{\"weight_map\":{\"" + v + "\":7}}");
  EXPECT_TRUE(
      ConvertRefuses(index + ": weight_map entry '" + v + "' must be a shard file name, found 7"));

  SetBytes(src_ / "model.safetensors.index.json", "{\"weight_map\":{\"" + v + "\":\"" + kShard);
  EXPECT_TRUE(ConvertRefuses(index + ": invalid JSON: "));

  SetBytes(src_ / "model.safetensors.index.json",
           "{\"weight_map\":{\"" + v + "\":\"model-00002-of-00002.safetensors\"}}");
  EXPECT_TRUE(ConvertRefuses(
      index + " lists shard 'model-00002-of-00002.safetensors' (for tensor '" + v + "') but " +
      (src_ / "model-00002-of-00002.safetensors").string() + " does not exist"));
}

// --- config.json -----------------------------------------------------------

TEST_F(HostileSafetensorsTest, ConfigThatIsNotJsonOrNotAnObject) {
  const std::string config = (src_ / "config.json").string();
  SetBytes(src_ / "config.json", "{\"model_type\": \"llama\",");
  EXPECT_TRUE(ConvertRefuses(config + ": not valid JSON"));
  SetBytes(src_ / "config.json", "[\"llama\"]");
  EXPECT_TRUE(ConvertRefuses("which no plugin converts"));
}

// Both crash the CLI today (engine::ToMaxText's config.json parsing catches
// only json::parse_error, and the plugin adapter receives hf_config.dump(),
// which recurses once per level): enable once host/engine/convert.cc refuses
// them. 1e400 was found by fuzz_config_json.
TEST_F(HostileSafetensorsTest, ConfigNumberOverflowAndDeepNesting) {
  const std::string config = Bytes(src_ / "config.json");
  SetBytes(src_ / "config.json", "{\"rope_theta\": 1e400, " + config.substr(1));
  EXPECT_TRUE(ConvertRefuses((src_ / "config.json").string() + ": not valid JSON"));
  SetBytes(src_ / "config.json", "{\"deep\": " + std::string(200000, '[') +
                                     std::string(200000, ']') + ", " + config.substr(1));
  EXPECT_TRUE(ConvertRefuses((src_ / "config.json").string()));
}

TEST_F(HostileSafetensorsTest, ConfigWithAbsurdDimensions) {
  json config = json::parse(Bytes(src_ / "config.json"));
  struct Case {
    std::string key;
    json value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"num_hidden_layers", -2, "'num_hidden_layers' must be positive, got -2"},
      {"hidden_size", "64", "'hidden_size' must be an integer, got \"64\""},
      {"num_attention_heads", 0, "'num_attention_heads' must be positive, got 0"},
      {"vocab_size", 1.5, "'vocab_size' must be an integer, got 1.5"},
      {"hidden_size", 1e300, "'hidden_size' must be an integer, got 1e+300"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key);
    json bad = config;
    bad[c.key] = c.value;
    SetBytes(src_ / "config.json", bad.dump());
    EXPECT_TRUE(ConvertRefuses(c.message));
  }
}

}  // namespace
}  // namespace ckptbridge::hostile
