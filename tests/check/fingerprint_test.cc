// Axis fingerprints and ULP arithmetic in isolation: each planted mistake on
// hand-made tensors, and the legitimate layouts that must pass.
#include "host/check/fingerprint.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "host/base/numeric.h"
#include "host/check/verify.h"

namespace ckptbridge::check {
namespace {

using engine::Tensor;

Tensor Random(Shape shape, uint32_t seed) {
  Tensor t;
  t.shape = std::move(shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  t.data.resize(static_cast<size_t>(NumElementsUnchecked(t.shape)));
  for (float& v : t.data) v = dist(rng);
  return t;
}

FingerprintTensor Side(const std::string& name, std::vector<int32_t> axes, const Tensor& t) {
  return {name, std::move(axes), ComputeProfiles(t)};
}

TEST(ProfilesTest, EnergyPerIndexOfEveryAxis) {
  Tensor t{{2, 3}, {1, 2, 3, 4, 5, 6}};
  AxisProfiles p = ComputeProfiles(t);
  ASSERT_EQ(p.per_axis.size(), 2u);
  EXPECT_EQ(p.per_axis[0], (std::vector<double>{1 + 4 + 9, 16 + 25 + 36}));
  EXPECT_EQ(p.per_axis[1], (std::vector<double>{1 + 16, 4 + 25, 9 + 36}));
  EXPECT_EQ(p.total, 91);
}

TEST(ProfilesTest, NonFiniteValuesAreLeftOut) {
  Tensor t{{2}, {std::numeric_limits<float>::quiet_NaN(), 2}};
  EXPECT_EQ(ComputeProfiles(t).total, 4);
}

TEST(FingerprintTest, CorrectTransposePasses) {
  const Tensor hf = Random({8, 8}, 1);
  const Tensor mt = engine::Transpose(hf, {1, 0});
  EXPECT_TRUE(CompareFingerprints({Side("down", {CKB_AXIS_EMBED, CKB_AXIS_MLP}, hf)},
                                  {Side("wo", {CKB_AXIS_MLP, CKB_AXIS_EMBED}, mt)}, 1.0, 0.02)
                  .empty());
}

TEST(FingerprintTest, MissingTransposeOfASquareMatrixFailsNamingTheAxis) {
  const Tensor hf = Random({8, 8}, 2);
  auto findings = CompareFingerprints({Side("down", {CKB_AXIS_EMBED, CKB_AXIS_MLP}, hf)},
                                      {Side("wo", {CKB_AXIS_MLP, CKB_AXIS_EMBED}, hf)}, 1.0, 0.02);
  ASSERT_FALSE(findings.empty());
  EXPECT_EQ(findings[0].tensor, "wo");
  EXPECT_EQ(findings[0].axis, 0);
  EXPECT_EQ(findings[0].meaning, "mlp");
  EXPECT_NE(findings[0].message.find("transposed"), std::string::npos) << findings[0].message;
}

TEST(FingerprintTest, DeclaredScaleIsExpectedAndAMissingOneIsNamed) {
  const Tensor hf = Random({4, 6}, 3);
  Tensor mt = hf;
  engine::Scale(mt, 0.5f);
  const std::vector<int32_t> axes = {CKB_AXIS_MLP, CKB_AXIS_EMBED};
  EXPECT_TRUE(CompareFingerprints({Side("a", axes, hf)}, {Side("b", axes, mt)}, 0.5, 0.02).empty());
  auto findings = CompareFingerprints({Side("a", axes, hf)}, {Side("b", axes, mt)}, 1.0, 0.02);
  ASSERT_FALSE(findings.empty());
  EXPECT_NE(findings[0].message.find("constant factor of 0.5"), std::string::npos)
      << findings[0].message;
}

TEST(FingerprintTest, FusedHeadsAreComparedPerHeadAndHeadDimAsASet) {
  // q_proj [H*D, E] -> query [E, H, D]; RoPE interleaving inside a head is
  // legitimate, a permuted head order is not.
  const int64_t h = 4, d = 4, e = 6;
  const Tensor hf = Random({h * d, e}, 4);
  Tensor mt = engine::Transpose(hf, {1, 0});
  mt.shape = {e, h, d};
  const Tensor interleaved = engine::Interleave(mt, 2);
  const std::vector<int32_t> hf_axes = {CKB_AXIS_FUSED, CKB_AXIS_EMBED};
  const std::vector<int32_t> mt_axes = {CKB_AXIS_EMBED, CKB_AXIS_HEADS, CKB_AXIS_HEAD_DIM};
  EXPECT_TRUE(CompareFingerprints({Side("q", hf_axes, hf)}, {Side("query", mt_axes, interleaved)},
                                  1.0, 0.02)
                  .empty());

  // Swap heads 0 and 1.
  Tensor permuted = mt;
  for (int64_t i = 0; i < e; ++i) {
    for (int64_t k = 0; k < d; ++k) {
      std::swap(permuted.data[(i * h + 0) * d + k], permuted.data[(i * h + 1) * d + k]);
    }
  }
  auto findings =
      CompareFingerprints({Side("q", hf_axes, hf)}, {Side("query", mt_axes, permuted)}, 1.0, 0.02);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].meaning, "heads");
  EXPECT_EQ(findings[0].axis, 1);
  EXPECT_NE(findings[0].message.find("permuted"), std::string::npos) << findings[0].message;
}

TEST(FingerprintTest, GateUpHalvesMustLandInWi0AndWi1) {
  const int64_t f = 4, e = 6;
  const Tensor hf = Random({2 * f, e}, 5);
  auto pieces = engine::Split(engine::Transpose(hf, {1, 0}), 1, {f, f});
  const std::vector<int32_t> mt_axes = {CKB_AXIS_EMBED, CKB_AXIS_MLP};
  const auto in = Side("mlp.gate_up_proj.weight", {CKB_AXIS_MLP, CKB_AXIS_EMBED}, hf);
  EXPECT_TRUE(CompareFingerprints({in},
                                  {Side("mlp.wi_0.kernel", mt_axes, pieces[0]),
                                   Side("mlp.wi_1.kernel", mt_axes, pieces[1])},
                                  1.0, 0.02)
                  .empty());
  auto findings = CompareFingerprints(
      {in},
      {Side("mlp.wi_1.kernel", mt_axes, pieces[0]), Side("mlp.wi_0.kernel", mt_axes, pieces[1])},
      1.0, 0.02);
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_NE(findings[0].message.find("gate and up are swapped"), std::string::npos)
      << findings[0].message;
  EXPECT_EQ(findings[0].meaning, "mlp");
}

TEST(FingerprintTest, InterleavedGateUpIsRecognised) {
  const int64_t f = 4, e = 6;
  const Tensor hf = Random({e, 2 * f}, 6);
  auto pieces = engine::Split(engine::Deinterleave(hf, 1), 1, {f, f});
  const std::vector<int32_t> axes = {CKB_AXIS_EMBED, CKB_AXIS_MLP};
  EXPECT_TRUE(CompareFingerprints({Side("experts.gate_up_proj", axes, hf)},
                                  {Side("wi_0", axes, pieces[0]), Side("wi_1", axes, pieces[1])},
                                  1.0, 0.02)
                  .empty());
}

TEST(FingerprintTest, SeparateGateTensorWrittenToWi1IsNamed) {
  const Tensor hf = Random({4, 6}, 7);
  const auto findings = CompareFingerprints(
      {Side("model.layers.0.mlp.gate_proj.weight", {CKB_AXIS_MLP, CKB_AXIS_EMBED}, hf)},
      {Side("decoder.layers.mlp.wi_1.kernel", {CKB_AXIS_EMBED, CKB_AXIS_MLP},
            engine::Transpose(hf, {1, 0}))},
      1.0, 0.02);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_NE(findings[0].message.find("gate and up are swapped"), std::string::npos);
}

TEST(FingerprintTest, PaddedVocabularyComparesTheCommonPrefix) {
  const Tensor hf = Random({5, 4}, 8);
  const Tensor mt = engine::Resize(hf, 0, 8);
  const std::vector<int32_t> axes = {CKB_AXIS_VOCAB, CKB_AXIS_EMBED};
  EXPECT_TRUE(
      CompareFingerprints({Side("emb", axes, hf)}, {Side("emb", axes, mt)}, 1.0, 0.02).empty());
}

TEST(FingerprintTest, UndeclaredAxesCompareNothing) {
  const Tensor hf = Random({4, 4}, 9);
  EXPECT_TRUE(CompareFingerprints({Side("a", {}, hf)}, {Side("b", {}, hf)}, 1.0, 0.02).empty());
}

TEST(UlpTest, CountsRepresentableStepsInTheDtype) {
  const float one = 1.0f;
  const float next_bf16 = Bf16ToF32(F32ToBf16(1.0f) + 1);
  EXPECT_EQ(UlpDistance(DType::kBF16, one, next_bf16), 1u);
  EXPECT_EQ(UlpDistance(DType::kF32, one, next_bf16), 1u << 16);
  EXPECT_EQ(UlpDistance(DType::kBF16, -0.0f, 0.0f), 0u);
  EXPECT_EQ(UlpDistance(DType::kBF16, -next_bf16, -one), 1u);
  EXPECT_EQ(UlpDistance(DType::kBF16, NAN, NAN), 0u);
  EXPECT_EQ(UlpDistance(DType::kBF16, NAN, 1.0f), std::numeric_limits<uint64_t>::max());
}

TEST(UlpTest, HoldsExactly) {
  EXPECT_TRUE(HoldsExactly(DType::kF32, DType::kBF16));
  EXPECT_TRUE(HoldsExactly(DType::kBF16, DType::kBF16));
  EXPECT_TRUE(HoldsExactly(DType::kBF16, DType::kF8E4M3));
  EXPECT_FALSE(HoldsExactly(DType::kBF16, DType::kF32));
  EXPECT_FALSE(HoldsExactly(DType::kBF16, DType::kF16));
}

}  // namespace
}  // namespace ckptbridge::check
