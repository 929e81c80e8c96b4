// The command line as a user meets it: help, plugins, inspect, and every
// error convert raises for bad input (exit code 2, a message naming the file,
// tensor and both sides, and nothing left at the destination).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "host/base/file.h"
#include "host/engine/staging.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliRun;
using testing::RunCli;
using testing::TempDir;

const fs::path kLlama = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Whether some line of a table has exactly these leading whitespace-separated
// fields.
bool HasRow(const std::string& text, const std::vector<std::string>& fields) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    bool match = true;
    for (const std::string& field : fields) {
      std::string word;
      if (!(words >> word) || word != field) {
        match = false;
        break;
      }
    }
    if (match) return true;
  }
  return false;
}

// No file or directory of `dir` is a staging leftover.
void ExpectNoStagingLeftovers(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_FALSE(engine::IsStagingName(entry.path().filename().string())) << entry.path();
  }
}

TEST(HelpTest, EveryCommandExplainsItself) {
  CliRun top = RunCli({"--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_TRUE(Contains(top.out, "convert")) << top.out;
  EXPECT_TRUE(Contains(top.out, "CKPTBRIDGE_PLUGIN_PATH"));
  for (const std::string command : {"convert", "inspect", "plugins"}) {
    CliRun help = RunCli({command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command;
    EXPECT_TRUE(Contains(help.out, "Usage: ckptbridge " + command)) << help.out;
    EXPECT_TRUE(Contains(help.out, "--plugin-dir")) << command;
    CliRun via_help = RunCli({"help", command});
    EXPECT_EQ(via_help.out, help.out);
  }
  CliRun convert = RunCli({"convert", "--help"});
  for (const std::string flag :
       {"--to", "--no-scan-layers", "--save-dtype", "--ocdbt", "--no-zarr3", "--max-shard-size",
        "--hf-config", "--model", "--tokenizer", "--overwrite", "--threads"}) {
    EXPECT_TRUE(Contains(convert.out, flag)) << flag;
  }
  EXPECT_EQ(RunCli({"--version"}).exit_code, 0);
}

TEST(UsageTest, BadUsageExitsTwo) {
  CliRun none = RunCli({});
  EXPECT_EQ(none.exit_code, 2);
  CliRun unknown = RunCli({"frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_TRUE(Contains(unknown.err, "unknown command 'frobnicate'"));
  CliRun bad_option = RunCli({"convert", "--bogus"});
  EXPECT_EQ(bad_option.exit_code, 2);
  EXPECT_TRUE(Contains(bad_option.err, "see `ckptbridge convert --help`")) << bad_option.err;
  EXPECT_EQ(RunCli({"convert", kLlama.string(), "/tmp/x"}).exit_code, 2);  // no --to
  CliRun one_path = RunCli({"convert", "--to", "maxtext", kLlama.string()});
  EXPECT_EQ(one_path.exit_code, 2);
  EXPECT_TRUE(Contains(one_path.err, "expected SOURCE and DESTINATION"));
  CliRun both = RunCli({"convert", "--to", "maxtext", "--scan-layers", "--no-scan-layers",
                        kLlama.string(), "/tmp/x"});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_TRUE(Contains(both.err, "contradict"));
  CliRun size = RunCli({"convert", "--to", "hf", "--max-shard-size", "lots", "a", "b"});
  EXPECT_EQ(size.exit_code, 2);
  EXPECT_TRUE(Contains(size.err, "--max-shard-size 'lots' is not a size")) << size.err;
}

TEST(PluginsTest, ListsLlamaWithVersionAbiFamiliesAndPath) {
  CliRun run = RunCli({"plugins"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(Contains(run.out, "llama")) << run.out;
  EXPECT_TRUE(Contains(run.out, "0.1.0"));
  EXPECT_TRUE(Contains(run.out, "1.0"));
  EXPECT_TRUE(Contains(run.out, "llama, mistral, mixtral"));
  EXPECT_TRUE(Contains(run.out, "libckptbridge_llama.so"));
  EXPECT_TRUE(Contains(run.out, "llama3.1-8b"));  // presets
  CliRun as_json = RunCli({"plugins", "--json"});
  ASSERT_EQ(as_json.exit_code, 0);
  json doc = json::parse(as_json.out);
  json llama;
  for (const json& plugin : doc["plugins"]) {
    if (plugin["name"] == "llama") llama = plugin;
  }
  ASSERT_FALSE(llama.is_null()) << as_json.out;
  EXPECT_EQ(llama["abi"], "1.0");
  EXPECT_EQ(llama["model_types"], json({"llama", "mistral", "mixtral"}));
}

TEST(InspectTest, ListsEveryTensorOfAnHfFolder) {
  CliRun run = RunCli({"inspect", kLlama.string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(Contains(run.out, "tensors   21, 213,632 bytes")) << run.out;
  EXPECT_TRUE(Contains(run.out, "plugin    llama 0.1.0 (model_type llama)"));
  EXPECT_TRUE(HasRow(run.out, {"model.layers.1.self_attn.k_proj.weight", "BF16", "[32,64]", "4096",
                               "model.safetensors"}))
      << run.out;
  CliRun as_json = RunCli({"inspect", "--json", "--checksums", kLlama.string()});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  json doc = json::parse(as_json.out);
  EXPECT_EQ(doc["tensor_count"], 21);
  EXPECT_EQ(doc["tensors"][0]["name"], "lm_head.weight");
  EXPECT_EQ(doc["tensors"][0]["shape"], json({256, 64}));
  EXPECT_EQ(doc["tensors"][0]["bytes"], 32768);
  EXPECT_EQ(doc["tensors"][0]["file"], "model.safetensors");
  EXPECT_EQ(doc["tensors"][0]["crc32c"].get<std::string>().size(), 8u);
}

TEST(InspectTest, ListsAnOrbaxItemWithWhatWeRecorded) {
  TempDir tmp;
  ASSERT_EQ(
      RunCli({"convert", "--to", "maxtext", "--quiet", kLlama.string(), (tmp / "mt").string()})
          .exit_code,
      0);
  CliRun run = RunCli({"inspect", (tmp / "mt" / "0" / "items").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(Contains(run.out, "storage   zarr3 in OCDBT")) << run.out;
  EXPECT_TRUE(Contains(run.out, "layers    scanned"));
  EXPECT_TRUE(Contains(run.out, "plugin llama 0.1.0"));
  EXPECT_TRUE(Contains(run.out, "base_emb_dim: 64"));
  EXPECT_TRUE(Contains(run.out, "rope_type: \"llama3.1\""));
  EXPECT_TRUE(HasRow(run.out, {"params.params.decoder.layers.self_attention.query.kernel",
                               "bfloat16", "[64,2,4,16]", "16384", "[64,1,4,16]"}))
      << run.out;
  // Orbax's commit markers name the final location, not the staging one.
  EXPECT_EQ(*ReadFile(tmp / "mt" / "0" / "items" / "commit_success.txt"),
            "Checkpoint commit was successful to " + (tmp / "mt" / "0" / "items").string());
  EXPECT_EQ(*ReadFile(tmp / "mt" / "0" / "commit_success.txt"),
            "Checkpoint commit was successful to " + (tmp / "mt" / "0").string());
  // The root and the step directory resolve to the same item.
  EXPECT_EQ(RunCli({"inspect", (tmp / "mt").string()}).out, run.out);
}

TEST(InspectTest, RefusesWhatIsNeitherFormat) {
  TempDir tmp;
  CliRun run = RunCli({"inspect", tmp.path().string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "neither a Hugging Face checkpoint")) << run.err;
  CliRun missing = RunCli({"inspect", (tmp / "nope").string()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_TRUE(Contains(missing.err, "no such file or directory"));
}

TEST(ConvertErrorsTest, UnsupportedFamilyNamesThePluginsFound) {
  TempDir tmp;
  CliRun run = RunCli({"convert", "--to", "maxtext",
                       (testing::FixtureDir() / "hf" / "transformers-tiny_gpt2").string(),
                       (tmp / "out").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "model_type 'gpt2' (GPT2Model), which no plugin converts"))
      << run.err;
  EXPECT_TRUE(Contains(run.err, "llama 0.1.0 (llama, mistral, mixtral)")) << run.err;
  EXPECT_FALSE(fs::exists(tmp / "out"));
  ExpectNoStagingLeftovers(tmp.path());
}

TEST(ConvertErrorsTest, MlxQuantizedCheckpointIsRefusedWithTheReason) {
  TempDir tmp;
  CliRun run = RunCli({"convert", "--to", "maxtext",
                       (testing::FixtureDir() / "hf" / "mlxd-tiny_llama3_tied").string(),
                       (tmp / "out").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "MLX-quantized weights (4-bit affine, group size 32)")) << run.err;
  EXPECT_TRUE(Contains(run.err, "plugin 'llama'"));
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

TEST(ConvertErrorsTest, ExistingDestinationIsKeptWithoutOverwrite) {
  TempDir tmp;
  fs::create_directories(tmp / "out");
  ASSERT_TRUE(WriteFile(tmp / "out" / "keep.txt", "mine").ok());
  CliRun run = RunCli({"convert", "--to", "maxtext", kLlama.string(), (tmp / "out").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "already exists; pass --overwrite")) << run.err;
  EXPECT_TRUE(fs::exists(tmp / "out" / "keep.txt"));
  ExpectNoStagingLeftovers(tmp.path());

  CliRun again = RunCli({"convert", "--to", "maxtext", "--quiet", "--overwrite", kLlama.string(),
                         (tmp / "out").string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_FALSE(fs::exists(tmp / "out" / "keep.txt"));
  EXPECT_TRUE(fs::exists(tmp / "out" / "0" / "items" / "_METADATA"));
  ExpectNoStagingLeftovers(tmp.path());
}

TEST(ConvertErrorsTest, AnOrbaxOutputLeftBehindByAKilledRunIsNeverRead) {
  // What SIGKILL leaves: a complete-looking checkpoint in the staging
  // directory. Its name marks it unfinished, for Orbax and for us.
  TempDir tmp;
  Result<engine::StagedOutput> staged =
      engine::StagedOutput::Begin(tmp / "mt", false, engine::StagedOutput::Kind::kOrbax);
  ASSERT_TRUE(staged.ok());
  EXPECT_NE(staged->staging().filename().string().find(".orbax-checkpoint-tmp-"),
            std::string::npos);
  ASSERT_EQ(
      RunCli({"convert", "--to", "maxtext", "--quiet", kLlama.string(), (tmp / "done").string()})
          .exit_code,
      0);
  fs::copy(tmp / "done", staged->staging(), fs::copy_options::recursive);
  CliRun run = RunCli({"inspect", staged->staging().string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "unfinished checkpoint")) << run.err;
  CliRun convert =
      RunCli({"convert", "--to", "hf", staged->staging().string(), (tmp / "hf").string()});
  EXPECT_EQ(convert.exit_code, 2);
  EXPECT_FALSE(fs::exists(tmp / "hf"));
  EXPECT_EQ(engine::LeftoverStagingDirs(tmp / "mt").size(), 1u);
}

TEST(ConvertErrorsTest, StorageFlagsThatContradictOrDoNotApply) {
  TempDir tmp;
  const std::string out = (tmp / "out").string();
  for (const auto& [flags, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--to", "maxtext", "--ocdbt", "--no-ocdbt"},
            "--ocdbt and --no-ocdbt contradict each other"},
           {{"--to", "maxtext", "--zarr3", "--no-zarr3"},
            "--zarr3 and --no-zarr3 contradict each other"},
           {{"--to", "hf", "--no-ocdbt"},
            "--ocdbt/--no-ocdbt and --zarr3/--no-zarr3 apply to --to maxtext"},
           {{"--to", "hf", "--zarr3"},
            "--ocdbt/--no-ocdbt and --zarr3/--no-zarr3 apply to --to maxtext"},
           {{"--to", "maxtext", "--zstd-level", "0"}, "--zstd-level must be 1 to 22, got 0"},
           {{"--to", "maxtext", "--zstd-level", "23"}, "--zstd-level must be 1 to 22, got 23"},
           {{"--to", "hf", "--zstd-level", "3"},
            "--zstd-level applies to --to maxtext; safetensors are not compressed"}}) {
    std::vector<std::string> args = {"convert"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back(kLlama.string());
    args.push_back(out);
    CliRun run = RunCli(args);
    EXPECT_EQ(run.exit_code, 2) << ::testing::PrintToString(flags);
    EXPECT_TRUE(Contains(run.err, message)) << run.err;
    EXPECT_FALSE(fs::exists(out));
  }
}

TEST(ConvertTest, ZstdLevelIsWhatTheMetadataRecordsAndChangesNoValue) {
  // Level 1 by default (as small as Orbax's 3 on bf16 weights, twice as
  // fast); --zstd-level 3 is Orbax's. Plain files, so zarr.json is readable.
  TempDir tmp;
  for (const auto& [level, flags] : std::vector<std::pair<int, std::vector<std::string>>>{
           {1, {}}, {3, {"--zstd-level", "3"}}, {19, {"--zstd-level", "19"}}}) {
    const fs::path mt = tmp / ("mt" + std::to_string(level));
    std::vector<std::string> args = {"convert", "--to", "maxtext", "--quiet", "--no-ocdbt"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back(kLlama.string());
    args.push_back(mt.string());
    CliRun run = RunCli(args);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const fs::path array = mt / "0" / "items" / "params.params.token_embedder.embedding";
    json zarr = json::parse(*ReadFile(array / "zarr.json"));
    EXPECT_EQ(zarr["codecs"][0]["configuration"]["codecs"][1]["configuration"]["level"], level);
    ASSERT_EQ(RunCli({"convert", "--to", "hf", "--quiet", mt.string(),
                      (tmp / ("hf" + std::to_string(level))).string()})
                  .exit_code,
              0);
    // Every tensor's stored bytes come back as the fixture holds them.
    EXPECT_TRUE(testing::ReadHfBytes(tmp / ("hf" + std::to_string(level))) ==
                testing::ReadHfBytes(kLlama))
        << "level " << level;
  }
}

TEST(ConvertTest, MaxMemoryBoundsTheSlicesInFlightAndNamesOneThatDoesNotFit) {
  TempDir tmp;
  // Units over 64 KiB are cut into row blocks (UnitMemoryLimit's floor); the
  // query kernels (64 KiB, rows split into heads) cannot be cut and do not
  // fit 32 KiB.
  CliRun run = RunCli({"convert", "--to", "maxtext", "--max-memory", "32KiB", kLlama.string(),
                       (tmp / "mt").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(Contains(run.err, "more than --max-memory (0 MiB): such slices run one at a time"))
      << run.err;
  // One slice at a time changes nothing in the result.
  CliRun back = RunCli({"convert", "--to", "hf", "--quiet", "--max-memory", "32KiB",
                        (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), testing::ReadHfBytes(kLlama));

  for (const auto& [value, message] : std::vector<std::pair<std::string, std::string>>{
           {"0", "--max-memory '0' is out of range"}, {"lots", "--max-memory"}}) {
    CliRun bad = RunCli({"convert", "--to", "maxtext", "--max-memory", value, kLlama.string(),
                         (tmp / "bad").string()});
    EXPECT_EQ(bad.exit_code, 2) << value;
    EXPECT_TRUE(Contains(bad.err, message)) << bad.err;
    EXPECT_FALSE(fs::exists(tmp / "bad"));
  }
}

TEST(ConvertErrorsTest, BadSaveDtype) {
  TempDir tmp;
  CliRun run = RunCli({"convert", "--to", "maxtext", "--save-dtype", "int4", kLlama.string(),
                       (tmp / "out").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "--save-dtype 'int4' is not one of")) << run.err;
}

// A copy of the tiny llama with its config edited by `edit`.
fs::path EditedLlama(const TempDir& tmp, const std::function<void(json&)>& edit) {
  fs::path dir = tmp / "edited";
  fs::create_directories(dir);
  fs::copy_file(kLlama / "model.safetensors", dir / "model.safetensors");
  json config = json::parse(*ReadFile(kLlama / "config.json"));
  edit(config);
  EXPECT_TRUE(WriteFile(dir / "config.json", config.dump()).ok());
  return dir;
}

TEST(ConvertErrorsTest, ConfigThatDoesNotMatchTheWeights) {
  TempDir tmp;
  fs::path src = EditedLlama(tmp, [](json& c) { c["intermediate_size"] = 96; });
  CliRun run = RunCli({"convert", "--to", "maxtext", src.string(), (tmp / "out").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err,
                       "model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape "
                       "[128, 64] but plugin 'llama' 0.1.0 expects [96, 64] from config.json"))
      << run.err;
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

TEST(ConvertErrorsTest, MissingAndUnmappedTensorsAreListed) {
  TempDir tmp;
  // More layers than the weights have: the missing ones are named.
  fs::path src = EditedLlama(tmp, [](json& c) { c["num_hidden_layers"] = 3; });
  CliRun missing = RunCli({"convert", "--to", "maxtext", src.string(), (tmp / "out").string()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_TRUE(Contains(missing.err, "plugin 'llama' 0.1.0 needs 9 tensors that are not in"))
      << missing.err;
  EXPECT_TRUE(Contains(missing.err, "model.layers.2.input_layernorm.weight"));

  // Tied config but the weights have an untied head: lm_head is declared
  // ignored, so this converts, with a note.
  TempDir tmp2;
  fs::path tied = EditedLlama(tmp2, [](json& c) { c["tie_word_embeddings"] = true; });
  CliRun run = RunCli({"convert", "--to", "maxtext", tied.string(), (tmp2 / "out").string()});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(Contains(run.err, "skipped 1 tensor (tie_word_embeddings is set")) << run.err;

  // Fewer layers than the weights: layer 1 is unmapped.
  TempDir tmp3;
  fs::path fewer = EditedLlama(tmp3, [](json& c) { c["num_hidden_layers"] = 1; });
  CliRun unmapped = RunCli({"convert", "--to", "maxtext", fewer.string(), (tmp3 / "out").string()});
  EXPECT_EQ(unmapped.exit_code, 2);
  EXPECT_TRUE(Contains(unmapped.err,
                       "has 9 tensors that plugin 'llama' 0.1.0 does not map: "
                       "model.layers.1.input_layernorm.weight"))
      << unmapped.err;
}

TEST(ConvertErrorsTest, MissingConfigAndMissingSource) {
  TempDir tmp;
  fs::create_directories(tmp / "bare");
  fs::copy_file(kLlama / "model.safetensors", tmp / "bare" / "model.safetensors");
  CliRun run =
      RunCli({"convert", "--to", "maxtext", (tmp / "bare").string(), (tmp / "out").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "no config.json")) << run.err;
  CliRun gone =
      RunCli({"convert", "--to", "maxtext", (tmp / "nope").string(), (tmp / "out").string()});
  EXPECT_EQ(gone.exit_code, 2);
  EXPECT_TRUE(Contains(gone.err, "no such file or directory"));
}

TEST(ConvertToHfTest, ForeignCheckpointNeedsAConfigAndPresetsProvideOne) {
  TempDir tmp;
  ASSERT_EQ(RunCli({"convert", "--to", "maxtext", "--quiet", "--no-scan-layers", kLlama.string(),
                    (tmp / "mt").string()})
                .exit_code,
            0);
  // Strip what ckptbridge recorded, as if MaxText had written the item.
  const fs::path metadata = tmp / "mt" / "0" / "items" / "_METADATA";
  json tree = json::parse(*ReadFile(metadata));
  tree["custom_metadata"] = {{"scan_layers", false}};
  ASSERT_TRUE(WriteFile(metadata, tree.dump()).ok());

  CliRun no_config =
      RunCli({"convert", "--to", "hf", (tmp / "mt").string(), (tmp / "hf").string()});
  EXPECT_EQ(no_config.exit_code, 2);
  EXPECT_TRUE(Contains(no_config.err, "pass --hf-config FILE")) << no_config.err;

  CliRun with_config =
      RunCli({"convert", "--to", "hf", "--quiet", "--hf-config", (kLlama / "config.json").string(),
              "--tokenizer", kLlama.string(), (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(with_config.exit_code, 0) << with_config.err;
  EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), testing::ReadHfBytes(kLlama));

  // A preset of another size does not fit: the error names both shapes.
  CliRun preset = RunCli({"convert", "--to", "hf", "--model", "llama3.1-8b", (tmp / "mt").string(),
                          (tmp / "hf2").string()});
  EXPECT_EQ(preset.exit_code, 2);
  EXPECT_TRUE(
      Contains(preset.err, "has shape [256, 64] but plugin 'llama' 0.1.0 expects [128256, 4096]"))
      << preset.err;
  CliRun unknown = RunCli(
      {"convert", "--to", "hf", "--model", "gpt-5", (tmp / "mt").string(), (tmp / "hf3").string()});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_TRUE(Contains(unknown.err, "--model 'gpt-5' is not a preset")) << unknown.err;
  EXPECT_FALSE(fs::exists(tmp / "hf2"));
  EXPECT_FALSE(fs::exists(tmp / "hf3"));
}

TEST(ConvertToHfTest, ScanLayersMustAgreeWithTheCheckpoint) {
  TempDir tmp;
  ASSERT_EQ(
      RunCli({"convert", "--to", "maxtext", "--quiet", kLlama.string(), (tmp / "mt").string()})
          .exit_code,
      0);
  CliRun run = RunCli(
      {"convert", "--to", "hf", "--no-scan-layers", (tmp / "mt").string(), (tmp / "hf").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err,
                       "--no-scan-layers contradicts the checkpoint, which records "
                       "scan_layers=true"))
      << run.err;
}

TEST(ConvertToHfTest, CopiesTokenizerFilesAndWritesTheConfig) {
  TempDir tmp;
  fs::path src = tmp / "src";
  fs::create_directories(src);
  fs::copy_file(kLlama / "model.safetensors", src / "model.safetensors");
  fs::copy_file(kLlama / "config.json", src / "config.json");
  ASSERT_TRUE(WriteFile(src / "tokenizer.json", "{\"model\": {}}").ok());
  ASSERT_TRUE(WriteFile(src / "generation_config.json", "{}").ok());
  ASSERT_EQ(RunCli({"convert", "--to", "maxtext", "--quiet", src.string(), (tmp / "mt").string()})
                .exit_code,
            0);
  CliRun run = RunCli({"convert", "--to", "hf", (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(Contains(run.err, "copied tokenizer files from")) << run.err;
  EXPECT_EQ(*ReadFile(tmp / "hf" / "tokenizer.json"), "{\"model\": {}}");
  EXPECT_TRUE(fs::exists(tmp / "hf" / "generation_config.json"));
  json config = json::parse(*ReadFile(tmp / "hf" / "config.json"));
  EXPECT_EQ(config["architectures"], json({"LlamaForCausalLM"}));
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  EXPECT_EQ(config["rope_scaling"]["rope_type"], "llama3");
  // float32 on request, and the config says so.
  CliRun f32 = RunCli({"convert", "--to", "hf", "--quiet", "--save-dtype", "float32",
                       (tmp / "mt").string(), (tmp / "hf32").string()});
  ASSERT_EQ(f32.exit_code, 0) << f32.err;
  EXPECT_EQ(json::parse(*ReadFile(tmp / "hf32" / "config.json"))["torch_dtype"], "float32");
  EXPECT_EQ(testing::ReadHf(tmp / "hf32").at("lm_head.weight").dtype, DType::kF32);
}

}  // namespace
}  // namespace ckptbridge
