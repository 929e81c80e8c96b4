// Tests for host/plugin/adapter: every call through the C function table, the
// copy of the rules into host structs (every field), the checks on malformed
// rules, and how plugin errors become Status values.
#include "host/plugin/adapter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

fs::path PluginFile(const std::string& dir, const std::string& name) {
  return fs::path(CKB_TEST_PLUGIN_ROOT) / dir / ("libckptbridge_" + name + ".so");
}

LoadedPlugin Load(const std::string& dir, const std::string& name) {
  Result<LoadedPlugin> plugin = LoadPlugin(PluginFile(dir, name));
  EXPECT_TRUE(plugin.ok()) << plugin.status().message();
  return plugin.ok() ? *plugin : LoadedPlugin();
}

LoadedPlugin Good() { return Load("good", "test_good"); }
LoadedPlugin CreateFails() { return Load("create_fails", "test_create_fails"); }

std::unique_ptr<Adapter> MakeAdapter(const std::string& config = R"({"num_layers": 3})") {
  Result<std::unique_ptr<Adapter>> adapter = Adapter::Create(Good(), "test_a", config);
  EXPECT_TRUE(adapter.ok()) << adapter.status().message();
  return adapter.ok() ? std::move(*adapter) : nullptr;
}

// How many adapters the good plugin holds (its "live-adapters" test preset).
int LiveAdapters() {
  Result<std::string> text = PresetConfig(Good(), "live-adapters");
  EXPECT_TRUE(text.ok()) << text.status().message();
  return text.ok() ? std::stoi(*text) : -1;
}

// --- Create / destroy ---------------------------------------------------------

TEST(PluginAdapterTest, CreateAndDestroyBalance) {
  const int before = LiveAdapters();
  {
    std::unique_ptr<Adapter> adapter = MakeAdapter();
    ASSERT_NE(adapter, nullptr);
    EXPECT_EQ(adapter->plugin().name, "testfam");
    EXPECT_EQ(LiveAdapters(), before + 1);
  }
  EXPECT_EQ(LiveAdapters(), before);
}

TEST(PluginAdapterTest, CreateFailureCarriesThePluginsMessageAndCode) {
  struct Case {
    std::string config;
    StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"1:config.json: hidden_size must be positive, got -1", StatusCode::kInvalidArgument,
       "plugin 'badfam': config.json: hidden_size must be positive, got -1"},
      {"2:no such variant", StatusCode::kNotFound, "plugin 'badfam': no such variant"},
      {"3:quantized checkpoints are not converted", StatusCode::kUnsupported,
       "plugin 'badfam': quantized checkpoints are not converted"},
      {"4:x", StatusCode::kFailedPrecondition, "plugin 'badfam': x"},
      {"5:bug", StatusCode::kInternal, "plugin 'badfam': bug"},
      {"6:out of memory", StatusCode::kResourceExhausted, "plugin 'badfam': out of memory"},
      {"99:future code", StatusCode::kInternal, "plugin 'badfam': future code"},
      {"5", StatusCode::kInternal, "plugin 'badfam': create failed with status 5 and no message"},
      {"1:", StatusCode::kInvalidArgument,
       "plugin 'badfam': create failed with status 1 and no message"},
  };
  LoadedPlugin plugin = CreateFails();
  for (const Case& c : cases) {
    Result<std::unique_ptr<Adapter>> adapter = Adapter::Create(plugin, "bad_type", c.config);
    ASSERT_FALSE(adapter.ok()) << c.config;
    EXPECT_EQ(adapter.status().code(), c.code) << c.config;
    EXPECT_EQ(adapter.status().message(), c.message);
  }
}

TEST(PluginAdapterTest, CreateFailureFromAGoodPlugin) {
  Result<std::unique_ptr<Adapter>> adapter =
      Adapter::Create(Good(), "test_b", R"({"num_layers": -1})");
  ASSERT_FALSE(adapter.ok());
  EXPECT_EQ(adapter.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(adapter.status().message(),
            "plugin 'testfam': config.json: num_layers must be positive, got -1");
}

TEST(PluginAdapterTest, CreateRefusesAModelTypeThePluginDoesNotServe) {
  Result<std::unique_ptr<Adapter>> adapter = Adapter::Create(Good(), "llama", "{}");
  ASSERT_FALSE(adapter.ok());
  EXPECT_EQ(adapter.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(adapter.status().message(),
            "plugin 'testfam': does not serve model type 'llama' (it serves test_a, test_b)");
}

TEST(PluginAdapterTest, CreateWithoutALoadedPlugin) {
  Result<std::unique_ptr<Adapter>> adapter = Adapter::Create(LoadedPlugin(), "x", "{}");
  ASSERT_FALSE(adapter.ok());
  EXPECT_EQ(adapter.status().code(), StatusCode::kFailedPrecondition);
}

// --- Rules --------------------------------------------------------------------------

TEST(PluginAdapterTest, RulesAreCopiedFieldByField) {
  std::unique_ptr<Adapter> adapter = MakeAdapter(R"({"num_layers": 3})");
  ASSERT_NE(adapter, nullptr);
  Result<RuleSet> result = adapter->Rules(R"({"direction": "to_maxtext", "scan_layers": true})");
  ASSERT_TRUE(result.ok()) << result.status().message();
  // The adapter may go away: the rules are host memory.
  adapter.reset();
  const RuleSet& set = *result;
  ASSERT_EQ(set.rules.size(), 6u);

  const Rule& embed = set.rules[0];
  EXPECT_EQ(embed.flags, 0u);
  EXPECT_FALSE(embed.optional());
  EXPECT_FALSE(embed.lossy());
  ASSERT_EQ(embed.hf_inputs.size(), 1u);
  EXPECT_EQ(embed.hf_inputs[0].name, "model.embed_tokens.weight");
  EXPECT_THAT(embed.hf_inputs[0].dims, ElementsAre(16, 8));
  EXPECT_THAT(embed.hf_inputs[0].axis_meanings, ElementsAre(CKB_AXIS_VOCAB, CKB_AXIS_EMBED));
  ASSERT_EQ(embed.mt_outputs.size(), 1u);
  EXPECT_EQ(embed.mt_outputs[0].name, "token_embedder.embedding");
  EXPECT_THAT(embed.mt_outputs[0].dims, ElementsAre(16, 8));
  EXPECT_THAT(embed.stack, IsEmpty());
  EXPECT_THAT(embed.ops, IsEmpty());

  const Rule& query = set.rules[1];
  EXPECT_EQ(query.hf_inputs[0].name, "model.layers.{layer}.self_attn.q_proj.weight");
  EXPECT_THAT(query.hf_inputs[0].axis_meanings, ElementsAre(CKB_AXIS_FUSED, CKB_AXIS_EMBED));
  EXPECT_EQ(query.mt_outputs[0].name, "decoder.layers.self_attention.query.kernel");
  EXPECT_THAT(query.mt_outputs[0].dims, ElementsAre(8, 3, 2, 4));
  EXPECT_THAT(query.mt_outputs[0].axis_meanings,
              ElementsAre(CKB_AXIS_EMBED, CKB_AXIS_LAYERS, CKB_AXIS_HEADS, CKB_AXIS_HEAD_DIM));
  ASSERT_EQ(query.stack.size(), 1u);
  EXPECT_EQ(query.stack[0].meaning, CKB_AXIS_LAYERS);
  EXPECT_EQ(query.stack[0].mt_axis, 1);
  EXPECT_EQ(query.stack[0].count, 3);
  EXPECT_EQ(query.stack[0].hf_start, 0);
  EXPECT_EQ(query.stack[0].hf_stride, 1);
  ASSERT_EQ(query.ops.size(), 3u);
  EXPECT_EQ(query.ops[0].kind, OpKind::kTranspose);
  EXPECT_THAT(query.ops[0].values, ElementsAre(1, 0));
  EXPECT_EQ(query.ops[1].kind, OpKind::kReshape);
  EXPECT_THAT(query.ops[1].values, ElementsAre(8, 2, 4));
  EXPECT_EQ(query.ops[2].kind, OpKind::kScale);
  EXPECT_THAT(query.ops[2].values, IsEmpty());
  EXPECT_EQ(query.ops[2].factor, 0.5f);
  EXPECT_EQ(query.ops[2].inverse_factor, 2.0f);

  const Rule& experts = set.rules[2];
  EXPECT_EQ(experts.flags, static_cast<uint32_t>(CKB_RULE_OPTIONAL));
  EXPECT_TRUE(experts.optional());
  EXPECT_EQ(experts.hf_inputs[0].name, "model.layers.{layer}.mlp.experts.{expert}.w1.weight");
  EXPECT_THAT(experts.hf_inputs[0].axis_meanings, IsEmpty());  // the plugin passed NULL
  EXPECT_THAT(experts.mt_outputs[0].dims, ElementsAre(4, 3, 8, 6));
  ASSERT_EQ(experts.stack.size(), 2u);
  EXPECT_EQ(experts.stack[0].meaning, CKB_AXIS_EXPERTS);
  EXPECT_EQ(experts.stack[0].mt_axis, 0);
  EXPECT_EQ(experts.stack[0].count, 4);
  EXPECT_EQ(experts.stack[1].meaning, CKB_AXIS_LAYERS);
  EXPECT_EQ(experts.stack[1].mt_axis, 1);
  EXPECT_EQ(experts.stack[1].count, 3);
  EXPECT_EQ(experts.stack[1].hf_start, 1);
  EXPECT_EQ(experts.stack[1].hf_stride, 2);

  const Rule& gate_up = set.rules[3];
  ASSERT_EQ(gate_up.mt_outputs.size(), 2u);
  EXPECT_EQ(gate_up.mt_outputs[0].name, "decoder.layers.mlp.wi_0.kernel");
  EXPECT_EQ(gate_up.mt_outputs[1].name, "decoder.layers.mlp.wi_1.kernel");
  EXPECT_THAT(gate_up.mt_outputs[1].dims, ElementsAre(8, 3, 6));
  ASSERT_EQ(gate_up.ops.size(), 2u);
  EXPECT_EQ(gate_up.ops[1].kind, OpKind::kSplit);
  EXPECT_EQ(gate_up.ops[1].axis, 1);
  EXPECT_THAT(gate_up.ops[1].values, ElementsAre(6, 6));

  const Rule& head = set.rules[4];
  EXPECT_TRUE(head.lossy());
  EXPECT_FALSE(head.optional());
  ASSERT_EQ(head.ops.size(), 3u);
  EXPECT_EQ(head.ops[0].kind, OpKind::kPad);
  EXPECT_EQ(head.ops[0].axis, 0);
  EXPECT_EQ(head.ops[0].size, 20);
  EXPECT_EQ(head.ops[2].kind, OpKind::kAdd);
  EXPECT_EQ(head.ops[2].factor, 1.5f);

  const Rule& fp8 = set.rules[5];
  ASSERT_EQ(fp8.hf_inputs.size(), 2u);
  EXPECT_EQ(fp8.hf_inputs[1].name, "model.fp8.weight_scale_inv");
  EXPECT_THAT(fp8.hf_inputs[1].dims, ElementsAre(1, 1));
  ASSERT_EQ(fp8.ops.size(), 1u);
  EXPECT_EQ(fp8.ops[0].kind, OpKind::kCustom);
  EXPECT_EQ(fp8.ops[0].custom_id, 7);
  EXPECT_THAT(fp8.ops[0].values, ElementsAre(2, 2));

  ASSERT_EQ(set.ignores.size(), 2u);
  EXPECT_EQ(set.ignores[0].side, CKB_SIDE_HF);
  EXPECT_EQ(set.ignores[0].pattern, "model.layers.*.self_attn.rotary_emb.inv_freq");
  EXPECT_EQ(set.ignores[0].reason, "recomputed from rope_theta");
  EXPECT_EQ(set.ignores[1].side, CKB_SIDE_MAXTEXT);
  EXPECT_EQ(set.ignores[1].pattern, "decoder.mtp.*");
  EXPECT_EQ(set.ignores[1].reason, "");
  ASSERT_EQ(set.renames.size(), 1u);
  EXPECT_EQ(set.renames[0].side, CKB_SIDE_HF);
  EXPECT_EQ(set.renames[0].from_prefix, "orig.");
  EXPECT_EQ(set.renames[0].to_prefix, "model.");
}

struct BadRulesCase {
  std::string which;
  StatusCode code;
  std::string message;
};

void PrintTo(const BadRulesCase& c, std::ostream* os) { *os << c.which; }

class PluginBadRulesTest : public ::testing::TestWithParam<BadRulesCase> {};

TEST_P(PluginBadRulesTest, AreRejectedWithAMessageNamingTheRule) {
  const BadRulesCase& c = GetParam();
  std::unique_ptr<Adapter> adapter = MakeAdapter();
  ASSERT_NE(adapter, nullptr);
  Result<RuleSet> rules = adapter->Rules(R"({"bad":")" + c.which + R"("})");
  ASSERT_FALSE(rules.ok());
  EXPECT_EQ(rules.status().code(), c.code) << StatusCodeName(rules.status().code());
  EXPECT_EQ(rules.status().message(), c.message);
}

const std::string kBadRule = "plugin 'testfam': rule for 'decoder.bad.kernel': ";
const size_t kOpV1Size = offsetof(ckb_op, size) + sizeof(ckb_op::size);

INSTANTIATE_TEST_SUITE_P(
    Cases, PluginBadRulesTest,
    ::testing::Values(
        BadRulesCase{"op_kind", StatusCode::kInternal, kBadRule + "op 0 has unknown op kind 42"},
        BadRulesCase{"op_size", StatusCode::kInternal,
                     kBadRule + "op 0 has struct_size 8, an ABI 1.0 ckb_op has at least " +
                         std::to_string(kOpV1Size) + " bytes"},
        BadRulesCase{"split_first", StatusCode::kInternal,
                     kBadRule + "op 0 is a split op, which may only come last in a chain"},
        BadRulesCase{"stack_meaning", StatusCode::kInternal,
                     kBadRule + "stack axis 0 has meaning 3, expected layers (8) or experts (7)"},
        BadRulesCase{"stack_axis", StatusCode::kInternal,
                     kBadRule + "stack axis 0 (layers) is MaxText axis 5, out of range for "
                                "'decoder.bad.kernel' of rank 2"},
        BadRulesCase{"stack_count", StatusCode::kInternal,
                     kBadRule + "stack axis 0 (layers) has count 0, expected >= 1"},
        BadRulesCase{"leading_start", StatusCode::kInternal,
                     kBadRule + "stack axis 0 (layers) runs along the HF tensors' leading axis "
                                "but has hf_start 2 and hf_stride 1, expected 0 and 1"},
        BadRulesCase{
            "neg_dim", StatusCode::kInternal,
            kBadRule + "hf input 0 'model.bad.weight' has negative dim -1 at axis 1 ([4, -1])"},
        BadRulesCase{"axis_meaning", StatusCode::kInternal,
                     kBadRule + "mt output 0 'decoder.bad.kernel' has unknown axis meaning 42 at "
                                "axis 1"},
        BadRulesCase{"no_input", StatusCode::kInternal, kBadRule + "has no hf inputs"},
        BadRulesCase{"empty_name", StatusCode::kInternal,
                     kBadRule + "hf input 0 has an empty name"},
        BadRulesCase{
            "ignore_side", StatusCode::kInternal,
            "plugin 'testfam': ignore entry 1: has side 7, expected hf (0) or maxtext (1)"},
        BadRulesCase{"rename_side", StatusCode::kInternal,
                     "plugin 'testfam': rename entry 1: has side 1; only hf (0) names can be "
                     "renamed"},
        BadRulesCase{"rename_empty", StatusCode::kInternal,
                     "plugin 'testfam': rename entry 1: renames '' to 'b.'"},
        BadRulesCase{"fail", StatusCode::kUnsupported,
                     "plugin 'testfam': scan_layers=false is not supported"},
        BadRulesCase{"fail_silently", StatusCode::kInternal,
                     "plugin 'testfam': enumerate_rules failed with status 5 and no message"}));

// --- Config ---------------------------------------------------------------------------

TEST(PluginAdapterTest, TranslateConfigBothWays) {
  std::unique_ptr<Adapter> adapter = MakeAdapter(R"({"num_layers": 5})");
  ASSERT_NE(adapter, nullptr);
  Result<std::string> maxtext = adapter->TranslateConfig(CKB_TO_MAXTEXT);
  ASSERT_TRUE(maxtext.ok()) << maxtext.status().message();
  EXPECT_EQ(*maxtext, R"({"base_emb_dim": 8, "base_num_decoder_layers": 5})");
  // Sent in two pieces by the plugin; the host joins them.
  Result<std::string> hf = adapter->TranslateConfig(CKB_TO_HF);
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  EXPECT_EQ(*hf, R"({"model_type": "test_a", "num_layers": 5})");

  Result<std::string> bad = adapter->TranslateConfig(7);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(PluginAdapterTest, PresetConfig) {
  LoadedPlugin plugin = Good();
  Result<std::string> small = PresetConfig(plugin, "test-small");
  ASSERT_TRUE(small.ok()) << small.status().message();
  EXPECT_EQ(*small, R"({"model_type": "test_a", "num_layers": 2})");

  Result<std::string> unknown = PresetConfig(plugin, "llama3.1-8b");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(unknown.status().message(), "plugin 'testfam': unknown model 'llama3.1-8b'");

  Result<std::string> silent = PresetConfig(plugin, "silent");
  ASSERT_FALSE(silent.ok());
  EXPECT_EQ(silent.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(silent.status().message(), "plugin 'testfam': no preset for model 'silent'");

  Result<std::string> empty = PresetConfig(plugin, "empty");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInternal);
  EXPECT_EQ(empty.status().message(),
            "plugin 'testfam': preset_config returned no text for model 'empty'");
}

TEST(PluginAdapterTest, PresetConfigWithoutPresets) {
  Result<std::string> text = PresetConfig(CreateFails(), "test-small");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(text.status().message(),
            "plugin 'badfam': has no model presets, so no config for model 'test-small'");
}

// --- Custom transforms ------------------------------------------------------------------

TEST(PluginAdapterTest, ApplyCustomRunsOnHostBuffers) {
  std::unique_ptr<Adapter> adapter = MakeAdapter();
  ASSERT_NE(adapter, nullptr);
  std::vector<float> in = {1.0f, -2.0f, 3.5f, 0.25f};
  std::vector<float> scale = {1.0f};
  std::vector<float> out(4, 0.0f);
  Status status = adapter->ApplyCustom(
      7, {TensorRef{DType::kF32, {2, 2}, in.data()}, TensorRef{DType::kF32, {1, 1}, scale.data()}},
      {TensorRef{DType::kF32, {2, 2}, out.data()}});
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_THAT(out, ElementsAre(2.0f, -4.0f, 7.0f, 0.5f));
}

TEST(PluginAdapterTest, ApplyCustomErrors) {
  std::unique_ptr<Adapter> adapter = MakeAdapter();
  ASSERT_NE(adapter, nullptr);
  std::vector<float> in(4), out(4);
  Status unknown = adapter->ApplyCustom(9, {TensorRef{DType::kF32, {4}, in.data()}},
                                        {TensorRef{DType::kF32, {4}, out.data()}});
  EXPECT_EQ(unknown.code(), StatusCode::kNotFound);
  EXPECT_EQ(unknown.message(), "plugin 'testfam': unknown custom transform 9");

  // The dtype crosses as its ABI value, which the plugin checks.
  Status dtype = adapter->ApplyCustom(7, {TensorRef{DType::kBF16, {4}, in.data()}},
                                      {TensorRef{DType::kF32, {4}, out.data()}});
  EXPECT_EQ(dtype.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dtype.message(), "plugin 'testfam': custom transform 7: input 0 has dtype " +
                                 std::to_string(CKB_DTYPE_BF16) + ", expected f32");

  Status output = adapter->ApplyCustom(7, {TensorRef{DType::kF32, {4}, in.data()}},
                                       {TensorRef{DType::kF16, {4}, out.data()}});
  EXPECT_EQ(output.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(output.message(),
            "plugin 'testfam': custom transform 7: output 0 is float16, custom outputs are "
            "float32");
}

TEST(PluginAdapterTest, ApplyCustomWithoutCustomTransforms) {
  // The create_fails plugin succeeds for config "0" and has no apply_custom.
  Result<std::unique_ptr<Adapter>> adapter = Adapter::Create(CreateFails(), "bad_type", "0");
  ASSERT_TRUE(adapter.ok()) << adapter.status().message();
  std::vector<float> in(4), out(4);
  Status status = (*adapter)->ApplyCustom(3, {TensorRef{DType::kF32, {4}, in.data()}},
                                          {TensorRef{DType::kF32, {4}, out.data()}});
  EXPECT_EQ(status.code(), StatusCode::kUnsupported);
  EXPECT_EQ(status.message(),
            "plugin 'badfam': custom transform 3 was requested but the plugin has no custom "
            "transforms");
}

TEST(PluginAdapterTest, CreateThatReturnsNoAdapterIsAPluginBug) {
  Result<std::unique_ptr<Adapter>> adapter = Adapter::Create(CreateFails(), "bad_type", "null");
  ASSERT_FALSE(adapter.ok());
  EXPECT_EQ(adapter.status().code(), StatusCode::kInternal);
  EXPECT_EQ(adapter.status().message(),
            "plugin 'badfam': create succeeded but returned no adapter");
}

}  // namespace
}  // namespace ckptbridge
