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

// Experts held along the leading axis of one HF tensor per layer, as
// GPT-OSS stores them: [X=3, 4, 2] per layer, MaxText [X, L=2, 2, 4].
Rule LeadingExpertRule() {
  Rule rule;
  rule.hf_inputs = {Decl("layers.{layer}.experts", {3, 4, 2})};
  rule.mt_outputs = {Decl("decoder.layers.experts", {3, 2, 2, 4})};
  StackAxis layers{CKB_AXIS_LAYERS, 1, 2, 0, 1};
  StackAxis experts{CKB_AXIS_EXPERTS, 0, 3, 0, 1};
  experts.hf_leading = true;
  rule.stack = {layers, experts};
  OpSpec t;
  t.kind = OpKind::kTranspose;
  t.values = {1, 0};  // on one expert: [4, 2] -> [2, 4]
  rule.ops = {t};
  return rule;
}

TEST(PlanToMaxTextTest, ALeadingStackAxisMakesOneUnitPerIndexOfTheHfTensor) {
  TempDir tmp;
  auto ckpt =
      MakeCheckpoint(tmp, {{"layers.0.experts", {3, 4, 2}}, {"layers.1.experts", {3, 4, 2}}});
  RuleSet rules;
  rules.rules = {LeadingExpertRule()};
  Result<Plan> plan = PlanToMaxText(rules, *ckpt, ToMaxTextOptions(), "plugin 'test'");
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  // Each HF tensor is read once, in three parts of 16 bytes.
  ASSERT_EQ(plan->hf_tensors.size(), 2u);
  EXPECT_EQ(plan->read_bytes, 96u);
  ASSERT_EQ(plan->units.size(), 6u);
  for (size_t i = 0; i < plan->units.size(); ++i) {
    const Unit& unit = plan->units[i];
    EXPECT_EQ(unit.slice,
              (std::vector<int64_t>{static_cast<int64_t>(i / 3), static_cast<int64_t>(i % 3)}));
    EXPECT_EQ(unit.hf_leading_index, static_cast<int64_t>(i % 3));
    EXPECT_EQ(unit.bytes, 16u);
    ASSERT_EQ(unit.hf_tensors.size(), 1u);
    const HfTensor& hf = plan->hf_tensors[unit.hf_tensors[0]];
    EXPECT_EQ(hf.name, "layers." + std::to_string(i / 3) + ".experts");
    const HfPart part = UnitHfPart(hf, unit);
    EXPECT_EQ(part.shape, (Shape{4, 2}));
    EXPECT_EQ(part.byte_offset, 16u * (i % 3));
    EXPECT_EQ(part.num_bytes, 16u);
  }
  // One chunk per (expert, layer).
  EXPECT_EQ(plan->mt_tensors[0].chunk_shape, (Shape{1, 1, 2, 4}));
  EXPECT_EQ(plan->rules[0].forward.outputs, (std::vector<Shape>{{2, 4}}));
}

TEST(PlanToMaxTextTest, LeadingStackAxesAreChecked) {
  TempDir tmp;
  auto ckpt =
      MakeCheckpoint(tmp, {{"layers.0.experts", {3, 4, 2}}, {"layers.1.experts", {3, 4, 2}}});
  RuleSet rules;
  rules.rules = {LeadingExpertRule()};
  rules.rules[0].hf_inputs[0].dims = {4, 4, 2};
  Status count = PlanError(rules, *ckpt);
  EXPECT_EQ(count.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(count.message(),
            "plugin 'test': rule for 'decoder.layers.experts': stacks 3 slices along the leading "
            "axis of the HF tensors, but 'layers.{layer}.experts' is [4, 4, 2]");

  rules.rules = {LeadingExpertRule()};
  rules.rules[0].stack[0].hf_leading = true;
  Status two = PlanError(rules, *ckpt);
  EXPECT_EQ(two.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(two.message().find("has two stack axes along the HF leading axis"), std::string::npos)
      << two.message();

  // A leading expert axis names no tensor: an {expert} placeholder is a bug.
  rules.rules = {LeadingExpertRule()};
  rules.rules[0].hf_inputs[0].name = "layers.{layer}.experts.{expert}";
  Status placeholder = PlanError(rules, *ckpt);
  EXPECT_EQ(placeholder.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(placeholder.message().find("uses {expert} but the rule does not stack it"),
            std::string::npos)
      << placeholder.message();
}

TEST(PlanToMaxTextTest, UnitsOverTheMemoryLimitAreCutIntoBlocksOfRows) {
  // lm_head-like [V=10, E=4] -> [E, V]: the HF rows become MaxText axis 1.
  TempDir tmp;
  auto ckpt = MakeCheckpoint(tmp, {{"head", {10, 4}}, {"q", {8, 4}}});
  Rule head;
  head.hf_inputs = {Decl("head", {10, 4})};
  head.mt_outputs = {Decl("logits", {4, 10})};
  OpSpec t;
  t.kind = OpKind::kTranspose;
  t.values = {1, 0};
  head.ops = {t};
  // q_proj-like [Nq*D=8, E=4] -> [E, Nq=2, D=4]: a reshape splits the rows
  // into heads, so they cannot be cut.
  Rule query;
  query.hf_inputs = {Decl("q", {8, 4})};
  query.mt_outputs = {Decl("query", {4, 2, 4})};
  OpSpec r;
  r.kind = OpKind::kReshape;
  r.values = {4, 2, 4};
  query.ops = {t, r};
  RuleSet rules;
  rules.rules = {head, query};
  ToMaxTextOptions options;
  options.max_unit_memory = 200;  // [10, 4] needs 10 * 4 * 16 = 640 bytes
  Result<Plan> plan = PlanToMaxText(rules, *ckpt, options, "plugin 'test'");
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  EXPECT_EQ(plan->rules[0].row_axis, 1);
  EXPECT_EQ(plan->rules[1].row_axis, -1);
  // 640 / 200 -> 4 pieces of 10 / 4 = 2 rows; the last unit is the query.
  ASSERT_EQ(plan->units.size(), 6u);
  for (int64_t b = 0; b < 5; ++b) {
    const Unit& unit = plan->units[static_cast<size_t>(b)];
    EXPECT_EQ(unit.row_begin, 2 * b);
    EXPECT_EQ(unit.row_end, 2 * b + 2);
    EXPECT_TRUE(unit.partial());
    const HfPart part = UnitHfPart(plan->hf_tensors[unit.hf_tensors[0]], unit);
    EXPECT_EQ(part.shape, (Shape{2, 4}));
    EXPECT_EQ(part.byte_offset, static_cast<uint64_t>(16 * b));
    std::vector<int64_t> origin;
    Shape extent;
    UnitMtRegion(plan->rules[0], unit, plan->mt_tensors[0].shape, origin, extent);
    EXPECT_EQ(origin, (std::vector<int64_t>{0, 2 * b}));
    EXPECT_EQ(extent, (Shape{4, 2}));
    EXPECT_EQ(UnitMtSliceShape(plan->rules[0], unit, 0), (Shape{4, 2}));
    Result<Chain> chain = UnitChain(plan->rules[0], unit, Direction::kToMaxText);
    ASSERT_TRUE(chain.ok()) << chain.status().message();
    EXPECT_EQ(chain->outputs, (std::vector<Shape>{{4, 2}}));
  }
  EXPECT_FALSE(plan->units[5].partial());
  // The chunks follow the blocks.
  EXPECT_EQ(plan->mt_tensors[0].chunk_shape, (Shape{4, 2}));
  EXPECT_EQ(plan->mt_tensors[1].chunk_shape, (Shape{4, 2, 4}));
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
