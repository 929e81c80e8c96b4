// Receipts end to end: `convert` records what it read and how, in both
// directions; `--verify` adds its result; `inspect` shows it; checkpoints
// written by other tools show "no receipt" without error.
//
// Source hashes are checked against XXH3-128 computed here over each whole
// file, and the listed files against a directory walk done here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "host/base/file.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"
#include "tests/testing/testing.h"
#include "tests/testing/xxh3.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliRun;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunCli;
using testing::TempDir;

std::string FileXxh3(const fs::path& path) {
  Result<std::string> bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << path;
  return testing::Xxh3Of(*bytes);
}

// Every regular file below `dir`: relative path -> (bytes, XXH3-128).
std::map<std::string, std::pair<uint64_t, std::string>> Walk(const fs::path& dir) {
  std::map<std::string, std::pair<uint64_t, std::string>> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    files[entry.path().lexically_relative(dir).generic_string()] = {entry.file_size(),
                                                                    FileXxh3(entry.path())};
  }
  return files;
}

// The receipt's file list in the same shape.
std::map<std::string, std::pair<uint64_t, std::string>> Listed(const json& receipt) {
  std::map<std::string, std::pair<uint64_t, std::string>> files;
  for (const json& f : receipt.at("source").at("files")) {
    files[f.at("path")] = {f.at("bytes").get<uint64_t>(), f.at("xxh3_128").get<std::string>()};
  }
  return files;
}

json OrbaxReceiptOf(const fs::path& path) {
  Result<std::unique_ptr<orbax::ItemReader>> item = orbax::ItemReader::Open(path);
  EXPECT_TRUE(item.ok()) << item.status().message();
  if (!item.ok()) return nullptr;
  return (*item)->tree().custom_metadata.at("ckptbridge").at("receipt");
}

json ReadJson(const fs::path& path) {
  Result<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << path;
  return text.ok() ? json::parse(*text) : json();
}

std::vector<fs::path> Shards(const fs::path& dir) {
  std::vector<fs::path> shards;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") shards.push_back(entry.path());
  }
  std::sort(shards.begin(), shards.end());
  return shards;
}

class ReceiptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    const json config = {{"model_type", "llama"},    {"vocab_size", 256},
                         {"hidden_size", 64},        {"intermediate_size", 128},
                         {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                         {"num_key_value_heads", 2}, {"tie_word_embeddings", false}};
    // float32 in several shards with an index: the receipt lists them all
    // and says the bfloat16 output came from float32.
    testing::WriteHfCheckpoint(src(), config, testing::LlamaFamilyTensors(config), DType::kF32,
                               /*seed=*/3, /*max_shard_bytes=*/100000);
    mt_run_ = new CliRun(RunCli(
        {"convert", "--to", "maxtext", "--quiet", "--verify", src().string(), mt().string()}));
    hf_run_ = new CliRun(RunCli({"convert", "--to", "hf", "--quiet", "--verify", "--max-shard-size",
                                 "40KB", mt().string(), hf().string()}));
  }
  static void TearDownTestSuite() {
    delete mt_run_;
    delete hf_run_;
    delete tmp_;
  }
  static fs::path src() { return *tmp_ / "src"; }
  static fs::path mt() { return *tmp_ / "mt"; }
  static fs::path hf() { return *tmp_ / "hf"; }

  static TempDir* tmp_;
  static CliRun* mt_run_;
  static CliRun* hf_run_;
};
TempDir* ReceiptTest::tmp_ = nullptr;
CliRun* ReceiptTest::mt_run_ = nullptr;
CliRun* ReceiptTest::hf_run_ = nullptr;

TEST_F(ReceiptTest, ToMaxTextRecordsSourceRulesFlagsDtypesAndVerification) {
  ASSERT_EQ(mt_run_->exit_code, 0) << mt_run_->err << mt_run_->out;
  const json receipt = OrbaxReceiptOf(mt());
  EXPECT_EQ(receipt["format"], 1);
  EXPECT_EQ(receipt["ckptbridge"]["version"], CKPTBRIDGE_VERSION);
  EXPECT_EQ(receipt["plugin"]["name"], "llama");
  EXPECT_THAT(receipt["plugin"]["abi"].get<std::string>(), ::testing::StartsWith("1."));
  EXPECT_EQ(receipt["model_type"], "llama");
  EXPECT_THAT(receipt["written_at"].get<std::string>(),
              ::testing::MatchesRegex("20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9:]+Z"));
  EXPECT_THAT(receipt["rules"]["hash"].get<std::string>(), ::testing::StartsWith("xxh3-128:"));
  EXPECT_GT(receipt["rules"]["rules"].get<int>(), 0);

  const json& flags = receipt["flags"];
  EXPECT_EQ(flags["direction"], "to_maxtext");
  EXPECT_EQ(flags["scan_layers"], true);
  EXPECT_EQ(flags["save_dtype"], "default");
  EXPECT_EQ(flags["ocdbt"], true);
  EXPECT_EQ(flags["zarr3"], true);

  // Every parameter array is bfloat16, made from float32.
  Result<std::unique_ptr<orbax::ItemReader>> item = orbax::ItemReader::Open(mt());
  ASSERT_TRUE(item.ok());
  size_t params = 0;
  for (const auto& array : (*item)->arrays()) params += array.leaf->name().rfind("params.", 0) == 0;
  EXPECT_EQ(receipt["dtypes"],
            json({{"bfloat16", {{"tensors", params}, {"from", {{"float32", params}}}}}}));

  // config.json, the index and every shard, with their sizes and hashes.
  const json& source = receipt["source"];
  EXPECT_EQ(source["format"], "huggingface");
  EXPECT_EQ(fs::path(source["path"].get<std::string>()), fs::absolute(src()).lexically_normal());
  EXPECT_EQ(Listed(receipt), Walk(src()));
  EXPECT_GE(source["file_count"].get<size_t>(), 4u);  // config, index, 2+ shards
  uint64_t bytes = 0;
  for (const auto& [path, entry] : Walk(src())) bytes += entry.first;
  EXPECT_EQ(source["bytes"], bytes);

  const json& verification = receipt["verification"];
  EXPECT_EQ(verification["result"], "ok");
  EXPECT_GT(verification["tensors"].get<int>(), 0);
  EXPECT_EQ(verification["exact"].get<int>() + verification["within_rounding"].get<int>(),
            verification["tensors"].get<int>());
  EXPECT_EQ(verification["beyond_rounding"], 0);
  EXPECT_EQ(verification["fingerprint_failures"], 0);

  // What was recorded before receipts existed is still there.
  const json& record = (*item)->tree().custom_metadata["ckptbridge"];
  for (const char* key :
       {"version", "plugin", "model_type", "hf_config", "maxtext_config", "source", "save_dtype"}) {
    EXPECT_TRUE(record.contains(key)) << key;
  }
  // Rewriting _METADATA after verification left no temporary file behind.
  for (const auto& entry : fs::directory_iterator((*item)->location().item_dir)) {
    EXPECT_THAT(entry.path().filename().string(), Not(HasSubstr(".tmp-")));
  }
}

TEST_F(ReceiptTest, ToHfRecordsEveryItemFileInEveryShardTheIndexAndTheReceiptFile) {
  ASSERT_EQ(mt_run_->exit_code, 0) << mt_run_->err;
  ASSERT_EQ(hf_run_->exit_code, 0) << hf_run_->err << hf_run_->out;
  const json receipt = ReadJson(hf() / "ckptbridge_receipt.json");
  EXPECT_EQ(receipt["flags"]["direction"], "to_hf");
  EXPECT_EQ(receipt["flags"]["max_shard_bytes"], 40000);
  EXPECT_EQ(receipt["source"]["format"], "orbax");
  Result<std::unique_ptr<orbax::ItemReader>> item = orbax::ItemReader::Open(mt());
  ASSERT_TRUE(item.ok());
  // Every file of the item (the OCDBT manifest, data files, _METADATA...).
  const auto listed = Listed(receipt);
  EXPECT_TRUE(listed.count("_METADATA"));
  EXPECT_TRUE(listed.count("manifest.ocdbt"));
  EXPECT_EQ(listed, Walk((*item)->location().item_dir));
  EXPECT_EQ(receipt["verification"]["result"], "ok");
  EXPECT_GT(receipt["verification"]["tensors"].get<int>(), 0);

  json embedded = receipt;
  embedded.erase("verification");
  embedded.erase("written_at");
  const std::vector<fs::path> shards = Shards(hf());
  ASSERT_GE(shards.size(), 2u);
  for (const fs::path& shard : shards) {
    Result<safetensors::File> file = safetensors::File::Open(shard);
    ASSERT_TRUE(file.ok()) << file.status().message();
    const auto& metadata = file->header().metadata;
    EXPECT_EQ(metadata.at("format"), "pt");
    ASSERT_TRUE(metadata.count("ckptbridge_receipt")) << shard;
    EXPECT_EQ(json::parse(metadata.at("ckptbridge_receipt")), embedded) << shard;
  }
  const json index = ReadJson(hf() / "model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["ckptbridge_receipt"], embedded);
  EXPECT_TRUE(index["metadata"].contains("total_size"));
}

TEST_F(ReceiptTest, InspectShowsTheReceiptOfBothKinds) {
  ASSERT_EQ(hf_run_->exit_code, 0) << hf_run_->err;
  const std::string hash = OrbaxReceiptOf(mt())["rules"]["hash"];
  CliRun orbax = RunCli({"inspect", mt().string()});
  ASSERT_EQ(orbax.exit_code, 0) << orbax.err;
  EXPECT_THAT(orbax.out, HasSubstr("  receipt   ckptbridge " CKPTBRIDGE_VERSION ", plugin llama"));
  EXPECT_THAT(orbax.out, HasSubstr("    rules     " + hash));
  EXPECT_THAT(orbax.out, HasSubstr("direction=to_maxtext"));
  EXPECT_THAT(orbax.out, HasSubstr("bfloat16 x"));
  EXPECT_THAT(orbax.out,
              HasSubstr("huggingface " + fs::absolute(src()).lexically_normal().string()));
  EXPECT_THAT(orbax.out, HasSubstr(FileXxh3(src() / "config.json") + "  config.json"));
  EXPECT_THAT(orbax.out, HasSubstr("more (inspect --json lists them)"));
  EXPECT_THAT(orbax.out, HasSubstr("    verified  ok at "));

  CliRun hf_text = RunCli({"inspect", hf().string()});
  ASSERT_EQ(hf_text.exit_code, 0) << hf_text.err;
  EXPECT_THAT(hf_text.out, HasSubstr("  receipt   ckptbridge "));
  EXPECT_THAT(hf_text.out, HasSubstr("direction=to_hf"));
  EXPECT_THAT(hf_text.out, HasSubstr("    verified  ok at "));

  CliRun hf_json = RunCli({"inspect", "--json", hf().string()});
  ASSERT_EQ(hf_json.exit_code, 0) << hf_json.err;
  EXPECT_EQ(json::parse(hf_json.out)["receipt"], ReadJson(hf() / "ckptbridge_receipt.json"));
  CliRun orbax_json = RunCli({"inspect", "--json", mt().string()});
  ASSERT_EQ(orbax_json.exit_code, 0) << orbax_json.err;
  EXPECT_EQ(json::parse(orbax_json.out)["receipt"], OrbaxReceiptOf(mt()));
}

TEST_F(ReceiptTest, RuleHashIsStableAcrossRunsAndFollowsTheRules) {
  ASSERT_EQ(mt_run_->exit_code, 0) << mt_run_->err;
  TempDir tmp;
  ASSERT_EQ(RunCli({"convert", "--to", "maxtext", "--quiet", src().string(), (tmp / "a").string()})
                .exit_code,
            0);
  ASSERT_EQ(RunCli({"convert", "--to", "maxtext", "--quiet", "--no-scan-layers", src().string(),
                    (tmp / "b").string()})
                .exit_code,
            0);
  const json first = OrbaxReceiptOf(mt()), again = OrbaxReceiptOf(tmp / "a");
  const json unscanned = OrbaxReceiptOf(tmp / "b");
  EXPECT_EQ(again["rules"]["hash"], first["rules"]["hash"]);
  EXPECT_EQ(again["source"], first["source"]);
  EXPECT_FALSE(again.contains("verification"));
  EXPECT_NE(unscanned["rules"]["hash"], first["rules"]["hash"]);
  EXPECT_EQ(unscanned["flags"]["scan_layers"], false);

  CliRun inspect = RunCli({"inspect", (tmp / "a").string()});
  EXPECT_THAT(inspect.out, HasSubstr("    verified  not run"));
}

TEST_F(ReceiptTest, ShardsOfTheSameConversionAreTheSameBytes) {
  ASSERT_EQ(hf_run_->exit_code, 0) << hf_run_->err;
  TempDir tmp;
  CliRun again = RunCli({"convert", "--to", "hf", "--quiet", "--max-shard-size", "40KB",
                         mt().string(), (tmp / "hf").string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const std::vector<fs::path> first = Shards(hf()), second = Shards(tmp / "hf");
  ASSERT_EQ(first.size(), second.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(FileXxh3(first[i]), FileXxh3(second[i])) << first[i].filename();
  }
  EXPECT_FALSE(ReadJson(tmp / "hf" / "ckptbridge_receipt.json").contains("verification"));
}

TEST_F(ReceiptTest, AnHfConfigGivenOnTheCommandLineIsASourceFileToo) {
  ASSERT_EQ(mt_run_->exit_code, 0) << mt_run_->err;
  TempDir tmp;
  CliRun run = RunCli({"convert", "--to", "hf", "--quiet", "--hf-config",
                       (src() / "config.json").string(), mt().string(), (tmp / "hf").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const json receipt = ReadJson(tmp / "hf" / "ckptbridge_receipt.json");
  EXPECT_EQ(fs::path(receipt["flags"]["hf_config"].get<std::string>()),
            fs::absolute(src() / "config.json").lexically_normal());
  bool found = false;
  for (const json& file : receipt["source"]["files"]) {
    const std::string path = file["path"];
    if (path.size() < 15 || path.substr(path.size() - 15) != "src/config.json") continue;
    found = true;
    EXPECT_EQ(file["xxh3_128"], FileXxh3(src() / "config.json"));
    EXPECT_EQ(file["bytes"], fs::file_size(src() / "config.json"));
  }
  EXPECT_TRUE(found) << receipt["source"].dump(2);
}

TEST_F(ReceiptTest, StripKeepsTheSourceReceiptButNotAsItsOwn) {
  ASSERT_EQ(mt_run_->exit_code, 0) << mt_run_->err;
  TempDir tmp;
  CliRun run = RunCli({"strip", "--quiet", mt().string(), (tmp / "stripped").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  Result<std::unique_ptr<orbax::ItemReader>> item = orbax::ItemReader::Open(tmp / "stripped");
  ASSERT_TRUE(item.ok()) << item.status().message();
  const json& record = (*item)->tree().custom_metadata.at("ckptbridge");
  EXPECT_FALSE(record.contains("receipt"));
  EXPECT_EQ(record.at("source_receipt"), OrbaxReceiptOf(mt()));
  CliRun inspect = RunCli({"inspect", (tmp / "stripped").string()});
  EXPECT_THAT(inspect.out, HasSubstr("  receipt   none"));
}

TEST_F(ReceiptTest, UnreadableReceiptIsShownNotFatal) {
  ASSERT_EQ(hf_run_->exit_code, 0) << hf_run_->err;
  TempDir tmp;
  fs::copy(hf(), tmp / "hf", fs::copy_options::recursive);
  ASSERT_TRUE(WriteFile(tmp / "hf" / "ckptbridge_receipt.json", "{\"format\": ").ok());
  CliRun inspect = RunCli({"inspect", (tmp / "hf").string()});
  EXPECT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_THAT(inspect.out, HasSubstr("  receipt   unreadable ("));
  EXPECT_THAT(inspect.out, HasSubstr("ckptbridge_receipt.json"));
  CliRun as_json = RunCli({"inspect", "--json", (tmp / "hf").string()});
  EXPECT_EQ(as_json.exit_code, 0) << as_json.err;
  EXPECT_TRUE(json::parse(as_json.out)["receipt"].contains("error"));

  // Without the file, the copy in the index is the receipt (minus verification).
  fs::remove(tmp / "hf" / "ckptbridge_receipt.json");
  CliRun from_index = RunCli({"inspect", (tmp / "hf").string()});
  EXPECT_THAT(from_index.out, HasSubstr("  receipt   ckptbridge "));
  EXPECT_THAT(from_index.out, HasSubstr("    verified  not run"));
}

// Checkpoints other tools wrote have no receipt; inspect says so and succeeds.
TEST(ReceiptFixtureTest, ForeignCheckpointsHaveNoReceipt) {
  const fs::path fixtures = testing::FixtureDir();
  for (const fs::path& path :
       {fixtures / "hf" / "mlxd-tiny_llama3", fixtures / "hf" / "transformers-tiny_gpt2",
        fixtures / "safetensors" / "safetensors-jl" / "torch_metadata.safetensors",
        fixtures / "safetensors" / "safetensors-jl" / "sharded",
        fixtures / "orbax" / "tunix-sft-step1",
        fixtures / "orbax" / "orbax-compat" / "v0_checkpoints" / "direct_checkpoint" /
            "checkpoint_metadata_present" / "pytree_checkpointable_has_metadata"}) {
    CliRun text = RunCli({"inspect", path.string()});
    EXPECT_EQ(text.exit_code, 0) << path << ": " << text.err;
    EXPECT_THAT(text.out, HasSubstr("  receipt   none (not written by ckptbridge")) << path;
    CliRun as_json = RunCli({"inspect", "--json", path.string()});
    EXPECT_EQ(as_json.exit_code, 0) << path << ": " << as_json.err;
    EXPECT_TRUE(json::parse(as_json.out)["receipt"].is_null()) << path;
  }
}

}  // namespace
}  // namespace ckptbridge
