// Planning: strict accounting, rule checks and chunking, with rule sets built
// here (no plugin) against small generated checkpoints.
#include "host/engine/plan.h"

#include <gtest/gtest.h>

#include "host/formats/safetensors/writer.h"
#include "tests/testing/testing.h"

namespace ckptbridge::engine {
namespace {

using testing::TempDir;

TensorDecl Decl(std::string name, Shape dims) { return {std::move(name), std::move(dims), {}}; }

// A checkpoint holding `tensors` (bf16 zeros).
std::unique_ptr<safetensors::Checkpoint> MakeCheckpoint(
    const TempDir& tmp, const std::vector<std::pair<std::string, Shape>>& tensors) {
  std::vector<safetensors::TensorWithData> data;
  for (const auto& [name, shape] : tensors) {
    data.push_back({{name, DType::kBF16, shape},
                    std::string(static_cast<size_t>(NumElementsUnchecked(shape)) * 2, '\0')});
  }
  EXPECT_TRUE(safetensors::WriteCheckpoint(tmp.path(), data).ok());
  auto ckpt = safetensors::Checkpoint::Open(tmp.path());
  EXPECT_TRUE(ckpt.ok());
  return std::move(*ckpt);
}

Rule LayerRule() {
  Rule rule;
  rule.hf_inputs = {Decl("layers.{layer}.w", {3, 4})};
  rule.mt_outputs = {Decl("decoder.layers.w", {4, 2, 3})};
  rule.stack = {{CKB_AXIS_LAYERS, 1, 2, 0, 1}};
  OpSpec t;
  t.kind = OpKind::kTranspose;
  t.values = {1, 0};
  rule.ops = {t};
  return rule;
}

Status PlanError(const RuleSet& rules, const safetensors::Checkpoint& ckpt) {
  return PlanToMaxText(rules, ckpt, ToMaxTextOptions(), "plugin 'test'").status();
}

TEST(PlanToMaxTextTest, UnitsSlicesAndBytes) {
  TempDir tmp;
  auto ckpt = MakeCheckpoint(tmp, {{"layers.0.w", {3, 4}}, {"layers.1.w", {3, 4}}});
  RuleSet rules;
  rules.rules = {LayerRule()};
  Result<Plan> plan = PlanToMaxText(rules, *ckpt, ToMaxTextOptions(), "plugin 'test'");
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->units.size(), 2u);
  EXPECT_EQ(plan->units[1].slice, (std::vector<int64_t>{1}));
  EXPECT_EQ(plan->hf_tensors[plan->units[1].hf_tensors[0]].name, "layers.1.w");
  ASSERT_EQ(plan->mt_tensors.size(), 1u);
  EXPECT_EQ(plan->mt_tensors[0].name, "params.params.decoder.layers.w");
  EXPECT_EQ(plan->mt_tensors[0].chunk_shape, (Shape{4, 1, 3}));
  EXPECT_EQ(plan->mt_tensors[0].dtype, DType::kBF16);
  EXPECT_EQ(plan->read_bytes, 48u);
  EXPECT_EQ(plan->write_bytes, 48u);
}

TEST(PlanToMaxTextTest, AccountingErrorsListTheKeys) {
  TempDir tmp;
  auto ckpt = MakeCheckpoint(tmp, {{"layers.0.w", {3, 4}}, {"stray", {2}}, {"layers.0.inv", {1}}});
  RuleSet rules;
  rules.rules = {LayerRule()};
  Status missing = PlanError(rules, *ckpt);
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("plugin 'test' needs 1 tensor that is not in"),
            std::string::npos)
      << missing.message();
  EXPECT_NE(missing.message().find("layers.1.w"), std::string::npos);

  rules.rules[0].stack[0].count = 1;
  rules.rules[0].mt_outputs[0].dims = {4, 1, 3};
  Status unmapped = PlanError(rules, *ckpt);
  EXPECT_EQ(unmapped.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(
      unmapped.message().find("has 2 tensors that plugin 'test' does not map: layers.0.inv, stray"),
      std::string::npos)
      << unmapped.message();

  rules.ignores = {{CKB_SIDE_HF, "layers.*.inv", "recomputed"}, {CKB_SIDE_HF, "stray", "noise"}};
  Result<Plan> plan = PlanToMaxText(rules, *ckpt, ToMaxTextOptions(), "plugin 'test'");
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->ignored.size(), 2u);
  EXPECT_EQ(plan->ignored[0].reason, "recomputed");
  EXPECT_EQ(plan->ignored[0].names, (std::vector<std::string>{"layers.0.inv"}));
}

TEST(PlanToMaxTextTest, OptionalRulesAreSkippedWhenTheirTensorsAreAbsent) {
  TempDir tmp;
  auto ckpt = MakeCheckpoint(tmp, {{"a", {2}}});
  RuleSet rules;
  Rule a;
  a.hf_inputs = {Decl("a", {2})};
  a.mt_outputs = {Decl("a", {2})};
  Rule b = a;
  b.hf_inputs = {Decl("b", {2})};
  b.mt_outputs = {Decl("b", {2})};
  b.flags = CKB_RULE_OPTIONAL;
  rules.rules = {a, b};
  Result<Plan> plan = PlanToMaxText(rules, *ckpt, ToMaxTextOptions(), "plugin 'test'");
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(plan->mt_tensors.size(), 1u);
  rules.rules[1].flags = 0;
  EXPECT_EQ(PlanError(rules, *ckpt).code(), StatusCode::kNotFound);
}

TEST(PlanToMaxTextTest, PluginBugsAreReportedWithTheRule) {
  TempDir tmp;
  auto ckpt = MakeCheckpoint(tmp, {{"layers.0.w", {3, 4}}, {"layers.1.w", {3, 4}}});
  auto expect = [&](Rule rule, const std::string& text) {
    RuleSet rules;
    rules.rules = {std::move(rule)};
    Status s = PlanError(rules, *ckpt);
    EXPECT_FALSE(s.ok()) << text;
    EXPECT_NE(s.message().find("plugin 'test': rule for 'decoder.layers.w': " + text),
              std::string::npos)
        << s.message();
  };
  Rule no_placeholder = LayerRule();
  no_placeholder.hf_inputs[0].name = "layers.0.w";
  expect(no_placeholder, "stacks on {layer} but no HF key template contains it");
  Rule unstacked = LayerRule();
  unstacked.stack.clear();
  unstacked.mt_outputs[0].dims = {4, 3};
  expect(unstacked,
         "HF key template 'layers.{layer}.w' uses {layer} but the rule does not stack it");
  Rule wrong_axis = LayerRule();
  wrong_axis.stack[0].mt_axis = 0;
  expect(wrong_axis, "MaxText shape [4, 2, 3] of 'decoder.layers.w' has no axis 0 of size 2");
  Rule wrong_ops = LayerRule();
  wrong_ops.ops.clear();
  expect(wrong_ops, "its ops turn the HF slice into [3, 4] but the MaxText slice is [4, 3]");
  Rule bad_op = LayerRule();
  bad_op.ops[0].values = {0, 1, 2};
  expect(bad_op, "transpose([0, 1, 2]): permutation has 3 axes");
  Rule twice = LayerRule();
  RuleSet rules;
  rules.rules = {LayerRule(), twice};
  Status dup = PlanError(rules, *ckpt);
  EXPECT_NE(dup.message().find("'decoder.layers.w' is produced by two rules"), std::string::npos)
      << dup.message();
}

TEST(PlanToMaxTextTest, WrongShapeAndDtypeNameTheFileAndBothSides) {
  TempDir tmp;
  auto ckpt = MakeCheckpoint(tmp, {{"layers.0.w", {3, 4}}, {"layers.1.w", {4, 3}}});
  RuleSet rules;
  rules.rules = {LayerRule()};
  Status s = PlanError(rules, *ckpt);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("model.safetensors: tensor 'layers.1.w' has shape [4, 3] but plugin "
                             "'test' expects [3, 4]"),
            std::string::npos)
      << s.message();

  TempDir tmp2;
  std::vector<safetensors::TensorWithData> data = {
      {{"layers.0.w", DType::kU32, {3, 4}}, std::string(48, '\0')},
      {{"layers.1.w", DType::kBF16, {3, 4}}, std::string(24, '\0')}};
  ASSERT_TRUE(safetensors::WriteCheckpoint(tmp2.path(), data).ok());
  auto ints = safetensors::Checkpoint::Open(tmp2.path());
  ASSERT_TRUE(ints.ok());
  Status dtype = PlanError(rules, **ints);
  EXPECT_NE(dtype.message().find(
                "tensor 'layers.0.w' has dtype U32 but floating-point weights are expected"),
            std::string::npos)
      << dtype.message();
}

TEST(PlanToMaxTextTest, SaveDtypeSourceKeepsTheInputDtype) {
  TempDir tmp;
  auto ckpt = MakeCheckpoint(tmp, {{"layers.0.w", {3, 4}}, {"layers.1.w", {3, 4}}});
  RuleSet rules;
  rules.rules = {LayerRule()};
  ToMaxTextOptions options;
  options.save_dtype = std::nullopt;
  Result<Plan> plan = PlanToMaxText(rules, *ckpt, options, "plugin 'test'");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->mt_tensors[0].dtype, DType::kBF16);
  options.save_dtype = DType::kF32;
  plan = PlanToMaxText(rules, *ckpt, options, "plugin 'test'");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->mt_tensors[0].dtype, DType::kF32);
  EXPECT_EQ(plan->write_bytes, 96u);
}

TEST(ChunkShapeTest, StackedAxesAreOneAndLargeSlicesAreCutIntoDivisors) {
  EXPECT_EQ(ChooseChunkShape({4096, 32, 14336}, {1}, 2, uint64_t{2} << 30),
            (Shape{4096, 1, 14336}));
  // A 128256 x 16384 bf16 embedding (4 GiB) is cut to <= 2 GiB chunks that
  // tile it exactly.
  Shape chunk = ChooseChunkShape({128256, 16384}, {}, 2, uint64_t{2} << 30);
  EXPECT_EQ(128256 % chunk[0], 0);
  EXPECT_EQ(16384 % chunk[1], 0);
  EXPECT_LE(static_cast<uint64_t>(chunk[0] * chunk[1] * 2), uint64_t{2} << 30);
  EXPECT_EQ(ChooseChunkShape({8, 4, 6}, {0, 1}, 4, 1 << 30), (Shape{1, 1, 6}));
  EXPECT_EQ(ChooseChunkShape({}, {}, 8, 1 << 30), (Shape{}));
  EXPECT_EQ(ChooseChunkShape({0, 5}, {}, 4, 1 << 30), (Shape{1, 5}));
}

TEST(TemplateTest, PlaceholdersTakeStartAndStride) {
  Rule rule;
  rule.stack = {{CKB_AXIS_EXPERTS, 0, 4, 0, 1}, {CKB_AXIS_LAYERS, 1, 3, 1, 2}};
  EXPECT_EQ(ResolveTemplate("l.{layer}.e.{expert}.w{layer}", rule, {3, 2}), "l.5.e.3.w5");
  EXPECT_TRUE(GlobMatch("model.layers.*.inv_freq", "model.layers.12.self_attn.inv_freq"));
  EXPECT_FALSE(GlobMatch("lm_head.weight", "lm_head.bias"));
}

}  // namespace
}  // namespace ckptbridge::engine
