// `ckptbridge doctor`: the findings on every real fixture, and each finding
// planted in a generated checkpoint.
#include "host/check/doctor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "host/base/file.h"
#include "host/formats/safetensors/writer.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliRun;
using testing::RunCli;
using testing::TempDir;

std::set<std::string> Codes(const fs::path& path) {
  Result<PluginRegistry> plugins = PluginRegistry::Discover({});
  EXPECT_TRUE(plugins.ok());
  Result<check::DoctorReport> report = check::Doctor(path, plugins.ok() ? &*plugins : nullptr);
  EXPECT_TRUE(report.ok()) << report.status().message();
  std::set<std::string> codes;
  if (report.ok()) {
    for (const check::Finding& f : report->findings) {
      codes.insert(f.code);
      EXPECT_FALSE(f.fix.empty()) << f.code;
      EXPECT_FALSE(f.message.empty()) << f.code;
    }
  }
  return codes;
}

struct FixtureCase {
  const char* path;  // under the fixture folder
  std::set<std::string> codes;
  int exit_code;
};

// Every real fixture, with exactly the findings it must produce.
const std::vector<FixtureCase>& Fixtures() {
  static const std::vector<FixtureCase> cases = {
      {"hf/mlxd-tiny_gemma3", {"format-metadata-missing", "torch-dtype-missing"}, 0},
      {"hf/mlxd-tiny_llama3", {"format-metadata-missing", "torch-dtype-missing"}, 0},
      {"hf/mlxd-tiny_llama3_tied",
       {"mlx-quantized", "unaligned-data", "format-metadata-missing", "torch-dtype-missing"},
       1},
      {"hf/mlxd-tiny_mistral", {"format-metadata-missing", "torch-dtype-missing"}, 0},
      {"hf/mlxd-tiny_qwen3", {"format-metadata-missing", "torch-dtype-missing"}, 0},
      {"hf/transformers-tiny_gpt2", {"no-plugin"}, 1},
      {"hf-index/gpt-oss-20b", {"index-missing-shard"}, 1},
      {"hf-index/mixtral-8x22b", {"index-missing-shard"}, 1},
      {"safetensors/safetensors-jl",
       {"config-missing", "duplicate-tensor", "format-metadata-missing"},
       1},
      {"safetensors/safetensors-jl/torch.safetensors",
       {"config-missing", "format-metadata-missing"},
       0},
      {"safetensors/safetensors-jl/torch_metadata.safetensors",
       {"config-missing", "format-metadata-missing"},
       0},
      {"safetensors/safetensors-jl/non_sharded",
       {"config-missing", "index-unused-shard", "format-metadata-missing"},
       1},
      {"safetensors/safetensors-jl/sharded", {"config-missing"}, 1},
      {"safetensors/hf-samples/samples",
       {"config-missing", "duplicate-tensor", "unaligned-data", "format-metadata-missing"},
       1},
      {"safetensors/malformed/safetensors_abuse_attempt_1.safetensors",
       {"header-invalid", "config-missing"},
       1},
      {"orbax/legacy-aggregate_some.checkpoint", {"orbax-no-use-ocdbt", "orbax-no-hf-config"}, 0},
      {"orbax/orbax-compat/v0_checkpoints/direct_checkpoint/checkpoint_metadata_present/"
       "pytree_checkpointable_has_metadata",
       {"orbax-no-hf-config"},
       0},
      {"orbax/orbax-compat/v0_checkpoints/direct_checkpoint/critical_metadata_alterations/"
       "missing_pytree_data_file_manifest.ocdbt",
       {"orbax-unreadable"},
       1},
      {"orbax/orbax-compat/v0_checkpoints/composite_checkpoint/checkpoint_metadata_present/"
       "pytree_checkpointable_has_metadata",
       {"orbax-item-name", "orbax-no-hf-config"},
       0},
      {"orbax/orbax-compat/v1_checkpoints/composite_checkpoint/checkpoint_metadata_present/"
       "pytree_checkpointable_has_metadata",
       {"orbax-item-name", "orbax-no-hf-config"},
       0},
      {"orbax/tunix-sft-step1", {"orbax-item-name", "orbax-no-use-ocdbt", "orbax-no-hf-config"}, 0},
  };
  return cases;
}

TEST(DoctorFixturesTest, EveryRealFixtureHasExactlyItsFindings) {
  for (const FixtureCase& c : Fixtures()) {
    const fs::path path = testing::FixtureDir() / c.path;
    ASSERT_TRUE(fs::exists(path)) << path;
    EXPECT_EQ(Codes(path), c.codes) << c.path;
    const CliRun run = RunCli({"doctor", path.string()});
    EXPECT_EQ(run.exit_code, c.exit_code) << c.path << "\n" << run.out << run.err;
    for (const std::string& code : c.codes) {
      EXPECT_NE(run.out.find("[" + code + "]"), std::string::npos) << c.path << "\n" << run.out;
    }
    EXPECT_NE(run.out.find("fix: "), std::string::npos) << run.out;
  }
}

TEST(DoctorFixturesTest, EveryFixtureFolderIsCovered) {
  // A fixture added later must get its expected findings here.
  std::set<std::string> covered;
  for (const FixtureCase& c : Fixtures()) covered.insert(c.path);
  for (const char* top : {"hf", "hf-index"}) {
    for (const auto& entry : fs::directory_iterator(testing::FixtureDir() / top)) {
      EXPECT_TRUE(covered.count(std::string(top) + "/" + entry.path().filename().string()))
          << entry.path();
    }
  }
}

TEST(DoctorFixturesTest, MessagesNameTheFilesAndTheFix) {
  const CliRun run = RunCli({"doctor", (testing::FixtureDir() / "hf-index/gpt-oss-20b").string()});
  EXPECT_NE(run.out.find("model-00001-of-00002.safetensors (197 tensors)"), std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find("download the missing shards"), std::string::npos) << run.out;
}

// Generated checkpoints ----------------------------------------------------

json LlamaConfig() {
  return {{"model_type", "llama"},
          {"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", 32},
          {"hidden_size", 16},
          {"intermediate_size", 32},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 2},
          {"num_key_value_heads", 1},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

// A sharded llama checkpoint (several shards and an index).
void WriteLlama(const fs::path& dir, const json& config,
                const std::vector<testing::HfTensorSpec>& tensors) {
  testing::WriteHfCheckpoint(dir, config, tensors, DType::kBF16, 3, /*max_shard_bytes=*/2048);
}
void WriteLlama(const fs::path& dir, const json& config = LlamaConfig()) {
  WriteLlama(dir, config, testing::LlamaFamilyTensors(config));
}

json ReadJson(const fs::path& file) { return json::parse(*ReadFile(file)); }
void WriteJson(const fs::path& file, const json& j) { ASSERT_TRUE(WriteFile(file, j.dump()).ok()); }

TEST(DoctorTest, CleanCheckpointHasNoFindings) {
  TempDir tmp;
  WriteLlama(tmp.path());
  ASSERT_TRUE(fs::exists(tmp.path() / "model.safetensors.index.json"));
  EXPECT_EQ(Codes(tmp.path()), std::set<std::string>{});
  const CliRun run = RunCli({"doctor", tmp.path().string()});
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_NE(run.out.find("0 errors, 0 warnings, 0 notes"), std::string::npos) << run.out;
}

TEST(DoctorTest, IndexDisagreeingWithTheShards) {
  TempDir tmp;
  WriteLlama(tmp.path());
  const fs::path index_file = tmp.path() / "model.safetensors.index.json";
  json index = ReadJson(index_file);
  const std::string first_shard = index["weight_map"]["model.norm.weight"];
  index["weight_map"]["model.layers.0.mlp.extra.weight"] = first_shard;  // stale entry
  index["weight_map"].erase("model.embed_tokens.weight");                // unlisted tensor
  WriteJson(index_file, index);
  fs::copy_file(tmp.path() / first_shard, tmp.path() / "model-old.safetensors");
  const std::set<std::string> codes = Codes(tmp.path());
  EXPECT_TRUE(codes.count("index-stale-entry"));
  EXPECT_TRUE(codes.count("index-unlisted"));
  EXPECT_TRUE(codes.count("index-unused-shard"));
  EXPECT_FALSE(codes.count("index-total-size"));
  index["metadata"]["total_size"] = 1;
  WriteJson(index_file, index);
  EXPECT_TRUE(Codes(tmp.path()).count("index-total-size"));

  fs::remove(tmp.path() / first_shard);
  EXPECT_TRUE(Codes(tmp.path()).count("index-missing-shard"));
  EXPECT_EQ(RunCli({"doctor", tmp.path().string()}).exit_code, 1);
}

TEST(DoctorTest, DuplicateTensorsAcrossShards) {
  TempDir tmp;
  const json config = LlamaConfig();
  WriteLlama(tmp.path(), config);
  fs::remove(tmp.path() / "model.safetensors.index.json");
  // Without an index every shard is read: write a stray copy of one tensor.
  std::vector<safetensors::TensorWithData> stray = {
      {{"model.norm.weight", DType::kBF16, {16}}, std::string(32, '\0')}};
  TempDir other;
  ASSERT_TRUE(safetensors::WriteCheckpoint(other.path(), stray).ok());
  fs::copy_file(other.path() / "model.safetensors", tmp.path() / "zz-stray.safetensors");
  EXPECT_TRUE(Codes(tmp.path()).count("duplicate-tensor"));
}

TEST(DoctorTest, LayerHolesMissingLayersAndMtp) {
  const json config = LlamaConfig();
  std::vector<testing::HfTensorSpec> all = testing::LlamaFamilyTensors(config);
  {
    TempDir tmp;
    json three = config;
    three["num_hidden_layers"] = 3;
    std::vector<testing::HfTensorSpec> t = testing::LlamaFamilyTensors(three);
    std::erase_if(t, [](const auto& s) { return s.name.find(".layers.1.") != std::string::npos; });
    WriteLlama(tmp.path(), three, t);
    EXPECT_TRUE(Codes(tmp.path()).count("layer-holes"));
  }
  {
    TempDir tmp;
    json four = config;
    four["num_hidden_layers"] = 4;
    WriteLlama(tmp.path(), four, all);
    EXPECT_TRUE(Codes(tmp.path()).count("layers-missing"));
  }
  json three = config;
  three["num_hidden_layers"] = 3;
  const std::vector<testing::HfTensorSpec> with_extra = testing::LlamaFamilyTensors(three);
  {
    TempDir tmp;
    WriteLlama(tmp.path(), config, with_extra);  // a third layer the config does not declare
    EXPECT_TRUE(Codes(tmp.path()).count("mtp-layers-mismatch"));
  }
  {
    TempDir tmp;
    json mtp = config;
    mtp["num_nextn_predict_layers"] = 1;
    WriteLlama(tmp.path(), mtp, with_extra);
    const std::set<std::string> codes = Codes(tmp.path());
    EXPECT_TRUE(codes.count("mtp-layers"));
    EXPECT_FALSE(codes.count("mtp-layers-mismatch"));
  }
}

TEST(DoctorTest, TiedEmbeddingsVsLmHead) {
  {
    TempDir tmp;
    json tied = LlamaConfig();
    WriteLlama(tmp.path(), LlamaConfig());  // has lm_head
    tied["tie_word_embeddings"] = true;
    WriteJson(tmp.path() / "config.json", tied);
    EXPECT_TRUE(Codes(tmp.path()).count("tied-with-lm-head"));
  }
  {
    TempDir tmp;
    json tied = LlamaConfig();
    tied["tie_word_embeddings"] = true;
    WriteLlama(tmp.path(), tied);  // no lm_head
    json untied = tied;
    untied["tie_word_embeddings"] = false;
    WriteJson(tmp.path() / "config.json", untied);
    EXPECT_TRUE(Codes(tmp.path()).count("untied-without-lm-head"));
    untied.erase("tie_word_embeddings");
    WriteJson(tmp.path() / "config.json", untied);
    EXPECT_TRUE(Codes(tmp.path()).count("tied-implicit"));
  }
}

TEST(DoctorTest, QuantizationConfigVsTensorsAndTorchDtype) {
  TempDir tmp;
  WriteLlama(tmp.path());
  json c = LlamaConfig();
  c["quantization_config"] = {{"quant_method", "fp8"}};
  c["torch_dtype"] = "float32";
  WriteJson(tmp.path() / "config.json", c);
  std::set<std::string> codes = Codes(tmp.path());
  EXPECT_TRUE(codes.count("quantization-config-without-tensors"));
  EXPECT_TRUE(codes.count("torch-dtype-mismatch"));

  // An FP8 weight without its scale, then without quantization_config.
  TempDir fp8;
  json q = LlamaConfig();
  q["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
  ASSERT_TRUE(WriteFile(fp8.path() / "config.json", q.dump()).ok());
  std::vector<safetensors::TensorWithData> tensors = {
      {{"model.embed_tokens.weight", DType::kBF16, {32, 16}}, std::string(1024, '\0')},
      {{"lm_head.weight", DType::kBF16, {32, 16}}, std::string(1024, '\0')},
      {{"model.layers.0.mlp.down_proj.weight", DType::kF8E4M3, {16, 32}}, std::string(512, '\0')},
      {{"model.layers.1.mlp.down_proj.weight", DType::kF8E4M3, {16, 32}}, std::string(512, '\0')},
      {{"model.layers.1.mlp.down_proj.weight_scale_inv", DType::kF32, {1, 1}},
       std::string(4, '\0')}};
  ASSERT_TRUE(safetensors::WriteCheckpoint(fp8.path(), tensors).ok());
  codes = Codes(fp8.path());
  EXPECT_TRUE(codes.count("fp8-scale-missing"));
  EXPECT_FALSE(codes.count("quantized-without-config"));
  q.erase("quantization_config");
  ASSERT_TRUE(WriteFile(fp8.path() / "config.json", q.dump()).ok());
  EXPECT_TRUE(Codes(fp8.path()).count("quantized-without-config"));
}

TEST(DoctorTest, BrokenConfigAndNoWeights) {
  TempDir tmp;
  ASSERT_TRUE(WriteFile(tmp.path() / "config.json", "{not json").ok());
  const std::set<std::string> codes = Codes(tmp.path());
  EXPECT_TRUE(codes.count("config-invalid"));
  EXPECT_TRUE(codes.count("no-weights"));
}

TEST(DoctorTest, OrbaxTemporaryLeftoversStepsAndItemName) {
  TempDir tmp;
  const fs::path mt = tmp.path() / "mt";
  ASSERT_EQ(RunCli({"convert", "-q", "--to", "maxtext",
                    (testing::FixtureDir() / "hf" / "mlxd-tiny_llama3").string(), mt.string()})
                .exit_code,
            0);
  EXPECT_EQ(Codes(mt), std::set<std::string>{});
  EXPECT_EQ(RunCli({"doctor", mt.string()}).exit_code, 0);

  fs::create_directories(mt / "1.orbax-checkpoint-tmp-1234");
  fs::copy(mt / "0", mt / "5", fs::copy_options::recursive);
  std::set<std::string> codes = Codes(mt);
  EXPECT_TRUE(codes.count("orbax-leftover-temporary"));
  EXPECT_TRUE(codes.count("orbax-several-steps"));
  EXPECT_EQ(RunCli({"doctor", mt.string()}).exit_code, 0);  // warnings only

  EXPECT_EQ(Codes(mt / "1.orbax-checkpoint-tmp-1234"), std::set<std::string>{"orbax-temporary"});
  EXPECT_EQ(RunCli({"doctor", (mt / "1.orbax-checkpoint-tmp-1234").string()}).exit_code, 1);

  fs::rename(mt / "5" / "items", mt / "5" / "model_params");
  EXPECT_TRUE(Codes(mt / "5").count("orbax-item-name"));
}

TEST(DoctorTest, BadInput) {
  TempDir tmp;
  EXPECT_EQ(Codes(tmp.path()), std::set<std::string>{"unknown-layout"});
  CliRun run = RunCli({"doctor", (tmp.path() / "nothing").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("no such file or directory"), std::string::npos) << run.err;
  run = RunCli({"doctor"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("expected one PATH"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace ckptbridge
