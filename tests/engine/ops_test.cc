// Every op, its shape rule and its inverse, checked against values computed
// here by hand or by naive index arithmetic (not by the kernels themselves).
#include "host/engine/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

namespace ckptbridge::engine {
namespace {

Tensor Iota(Shape shape) {
  Tensor t;
  t.shape = std::move(shape);
  t.data.resize(static_cast<size_t>(NumElementsUnchecked(t.shape)));
  std::iota(t.data.begin(), t.data.end(), 0.0f);
  return t;
}

OpSpec Op(OpKind kind, std::vector<int64_t> values = {}, int32_t axis = 0) {
  OpSpec op;
  op.kind = kind;
  op.values = std::move(values);
  op.axis = axis;
  return op;
}

// Applies a one-op chain and its derived inverse; the inverse must restore
// the input exactly.
void ExpectRoundTrip(const OpSpec& op, const std::vector<Tensor>& inputs) {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape);
  Result<Chain> forward = ResolveChain({op}, shapes);
  ASSERT_TRUE(forward.ok()) << forward.status().message();
  Result<Chain> backward = InvertChain(*forward);
  ASSERT_TRUE(backward.ok()) << backward.status().message();
  Result<std::vector<Tensor>> out = RunChain(*forward, inputs);
  ASSERT_TRUE(out.ok()) << out.status().message();
  Result<std::vector<Tensor>> back = RunChain(*backward, *out);
  ASSERT_TRUE(back.ok()) << back.status().message();
  ASSERT_EQ(back->size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ((*back)[i].shape, inputs[i].shape) << OpName(op);
    EXPECT_EQ((*back)[i].data, inputs[i].data) << OpName(op);
  }
}

TEST(TransposeTest, TwoDimensional) {
  Tensor t = Iota({2, 3});  // [[0,1,2],[3,4,5]]
  Tensor out = Transpose(t, {1, 0});
  EXPECT_EQ(out.shape, (Shape{3, 2}));
  EXPECT_EQ(out.data, (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(TransposeTest, LargeTwoDimensionalCrossesTiles) {
  Tensor t = Iota({70, 45});
  Tensor out = Transpose(t, {1, 0});
  for (int64_t r = 0; r < 70; ++r) {
    for (int64_t c = 0; c < 45; ++c) ASSERT_EQ(out.data[c * 70 + r], t.data[r * 45 + c]);
  }
}

TEST(TransposeTest, EveryPermutationOfFourAxesMatchesIndexArithmetic) {
  const Shape shape = {2, 3, 4, 5};
  Tensor t = Iota(shape);
  std::vector<int64_t> perm = {0, 1, 2, 3};
  do {
    Tensor out = Transpose(t, perm);
    Shape out_shape = {shape[perm[0]], shape[perm[1]], shape[perm[2]], shape[perm[3]]};
    ASSERT_EQ(out.shape, out_shape);
    // out[i0,i1,i2,i3] = in[j] where j[perm[k]] = i_k
    for (int64_t i0 = 0; i0 < out_shape[0]; ++i0)
      for (int64_t i1 = 0; i1 < out_shape[1]; ++i1)
        for (int64_t i2 = 0; i2 < out_shape[2]; ++i2)
          for (int64_t i3 = 0; i3 < out_shape[3]; ++i3) {
            int64_t idx[4];
            const int64_t o[4] = {i0, i1, i2, i3};
            for (int k = 0; k < 4; ++k) idx[perm[k]] = o[k];
            const int64_t src = ((idx[0] * 3 + idx[1]) * 4 + idx[2]) * 5 + idx[3];
            const int64_t dst = ((i0 * out_shape[1] + i1) * out_shape[2] + i2) * out_shape[3] + i3;
            ASSERT_EQ(out.data[dst], t.data[src]);
          }
    ExpectRoundTrip(Op(OpKind::kTranspose, perm), {t});
  } while (std::next_permutation(perm.begin(), perm.end()));
}

TEST(LayoutChainTest, MovesStoredElementsAsTheF32ChainMovesValues) {
  // transpose(0, 2, 1, 3) -> reshape -> transpose, on 16- and 32-bit
  // elements, against the f32 kernels on the same element values.
  const Shape shape = {3, 33, 40, 2};
  Result<Chain> chain =
      ResolveChain({Op(OpKind::kTranspose, {0, 2, 1, 3}), Op(OpKind::kReshape, {120, 66}),
                    Op(OpKind::kTranspose, {1, 0})},
                   {shape});
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  ASSERT_TRUE(IsLayoutOnly(*chain));
  Tensor t = Iota(shape);
  Result<std::vector<Tensor>> want = RunChain(*chain, {t});
  ASSERT_TRUE(want.ok());
  for (size_t size : {size_t{2}, size_t{4}}) {
    ScratchBuffer bytes(t.data.size() * size);
    for (size_t i = 0; i < t.data.size(); ++i) {
      const auto v = static_cast<uint32_t>(t.data[i]);
      std::memcpy(bytes.data() + i * size, &v, size);  // little-endian low bytes
    }
    // From a read-only source into a separate buffer (how the engine reads
    // a mapped safetensors slice) and in place: the same bytes.
    const std::string source(bytes.view());
    ScratchBuffer out(5);
    std::memcpy(out.data(), "stale", 5);
    ASSERT_TRUE(RunLayoutChain(*chain, size, std::string_view(source), out).ok());
    ASSERT_TRUE(RunLayoutChain(*chain, size, bytes).ok());
    EXPECT_EQ(out.view(), bytes.view());
    ASSERT_EQ(bytes.size(), t.data.size() * size);
    for (size_t i = 0; i < t.data.size(); ++i) {
      uint32_t v = 0;
      std::memcpy(&v, bytes.data() + i * size, size);
      ASSERT_EQ(v, static_cast<uint32_t>((*want)[0].data[i])) << size << " bytes, element " << i;
    }
  }
}

TEST(LayoutChainTest, TransposesEveryEdgeOfTheSimdSquaresExactly) {
  // The 2-D kernel moves 8x8 (16-bit) and 4x4 (32-bit) squares with SIMD
  // shuffles and the ragged edges one by one: sizes around 4, 8 and the
  // 32-element tile, each element checked by index arithmetic.
  for (int64_t rows : {1, 3, 4, 7, 8, 9, 31, 32, 33, 70}) {
    for (int64_t cols : {1, 5, 8, 15, 16, 17, 32, 45}) {
      Result<Chain> chain = ResolveChain({Op(OpKind::kTranspose, {1, 0})}, {{rows, cols}});
      ASSERT_TRUE(chain.ok());
      for (size_t size : {size_t{2}, size_t{4}}) {
        ScratchBuffer bytes(static_cast<size_t>(rows * cols) * size);
        for (int64_t i = 0; i < rows * cols; ++i) {
          const auto v = static_cast<uint32_t>(i * 2654435761u);
          std::memcpy(bytes.data() + i * size, &v, size);
        }
        const std::string in(bytes.view());
        ASSERT_TRUE(RunLayoutChain(*chain, size, bytes).ok());
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            ASSERT_EQ(std::memcmp(bytes.data() + (c * rows + r) * size,
                                  in.data() + (r * cols + c) * size, size),
                      0)
                << rows << "x" << cols << ", " << size << " bytes, element (" << r << ", " << c
                << ")";
          }
        }
      }
    }
  }
}

TEST(LayoutChainTest, ReshapesAloneCopyTheSourceUnchanged) {
  Result<Chain> chain = ResolveChain({Op(OpKind::kReshape, {6})}, {{2, 3}});
  ASSERT_TRUE(chain.ok());
  const std::string source = "abcdefghijkl";  // six 2-byte elements
  ScratchBuffer out;
  ASSERT_TRUE(RunLayoutChain(*chain, 2, std::string_view(source), out).ok());
  EXPECT_EQ(out.view(), source);
  ScratchBuffer wrong;
  EXPECT_EQ(RunLayoutChain(*chain, 2, std::string_view(source).substr(2), wrong).message(),
            "layout chain: 10 bytes for 6 elements of 2");
}

TEST(LayoutChainTest, RefusesWhatItCannotMove) {
  Result<Chain> scaled =
      ResolveChain({Op(OpKind::kTranspose, {1, 0}), Op(OpKind::kScale)}, {{2, 3}});
  ASSERT_TRUE(scaled.ok());
  EXPECT_FALSE(IsLayoutOnly(*scaled));
  ScratchBuffer bytes(12);
  EXPECT_EQ(RunLayoutChain(*scaled, 2, bytes).message(), "not a chain of transposes and reshapes");
  Result<Chain> plain = ResolveChain({Op(OpKind::kTranspose, {1, 0})}, {{2, 3}});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(RunLayoutChain(*plain, 3, bytes).message(),
            "layout chains move 2- or 4-byte elements, not 3");
  EXPECT_EQ(RunLayoutChain(*plain, 4, bytes).message(),
            "layout chain: 12 bytes for 6 elements of 4");
}

TEST(TransposeTest, RejectsBadPermutations) {
  EXPECT_FALSE(InferShapes(Op(OpKind::kTranspose, {0, 0}), {{2, 3}}).ok());
  Result<std::vector<Shape>> r = InferShapes(Op(OpKind::kTranspose, {1, 0, 2}), {{2, 3}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "transpose([1, 0, 2]): permutation has 3 axes but the input [2, 3] has 2");
}

TEST(ReshapeTest, KeepsOrderAndInverts) {
  Tensor t = Iota({4, 6});
  ExpectRoundTrip(Op(OpKind::kReshape, {4, 2, 3}), {t});
  Result<std::vector<Shape>> bad = InferShapes(Op(OpKind::kReshape, {5, 5}), {{4, 6}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "reshape([5, 5]): input [4, 6] has 24 elements, the new shape 25");
}

TEST(InterleaveTest, HalfSplitToAdjacentPairsAndBack) {
  // One head of D = 8: HF half-split [a0 a1 a2 a3 b0 b1 b2 b3] becomes
  // MaxText's adjacent pairs [a0 b0 a1 b1 a2 b2 a3 b3].
  Tensor t = Iota({2, 8});
  Tensor out = Interleave(t, 1);
  EXPECT_EQ(std::vector<float>(out.data.begin(), out.data.begin() + 8),
            (std::vector<float>{0, 4, 1, 5, 2, 6, 3, 7}));
  EXPECT_EQ(std::vector<float>(out.data.begin() + 8, out.data.end()),
            (std::vector<float>{8, 12, 9, 13, 10, 14, 11, 15}));
  Tensor back = Deinterleave(out, 1);
  EXPECT_EQ(back.data, t.data);
  ExpectRoundTrip(Op(OpKind::kInterleave, {}, 1), {Iota({3, 4, 6})});
  ExpectRoundTrip(Op(OpKind::kDeinterleave, {}, 0), {Iota({6, 5})});
  // GPT-OSS style: fused [g0 u0 g1 u1] de-interleaves to [g0 g1 u0 u1].
  Tensor fused;
  fused.shape = {4};
  fused.data = {1, 3, 2, 4};
  EXPECT_EQ(Deinterleave(fused, 0).data, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_FALSE(InferShapes(Op(OpKind::kInterleave, {}, 1), {{2, 7}}).ok());
  EXPECT_FALSE(InferShapes(Op(OpKind::kInterleave, {}, 2), {{2, 8}}).ok());
}

TEST(ScaleTest, UsesTheDeclaredInverseFactor) {
  OpSpec op = Op(OpKind::kScale);
  op.factor = static_cast<float>(1.0 / std::sqrt(128.0));
  op.inverse_factor = static_cast<float>(std::sqrt(128.0));
  Result<OpSpec> inv = InvertOp(op, {{4}});
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(inv->factor, static_cast<float>(std::sqrt(128.0)));
  Tensor t;
  t.shape = {3};
  t.data = {1.0f, -2.0f, 0.5f};
  Scale(t, 0.25f);
  EXPECT_EQ(t.data, (std::vector<float>{0.25f, -0.5f, 0.125f}));
  // A power-of-two scale inverts exactly.
  op.factor = 0.25f;
  op.inverse_factor = 4.0f;
  ExpectRoundTrip(op, {Iota({5})});
}

TEST(AddTest, AddsAndSubtracts) {
  OpSpec op = Op(OpKind::kAdd);
  op.factor = 1.0f;
  Tensor t;
  t.shape = {3};
  t.data = {0.0f, -1.0f, 2.5f};
  AddConstant(t, 1.0f);
  EXPECT_EQ(t.data, (std::vector<float>{1.0f, 0.0f, 3.5f}));
  Result<OpSpec> inv = InvertOp(op, {{3}});
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(inv->factor, -1.0f);
  ExpectRoundTrip(op, {Iota({2, 3})});
}

TEST(PadTruncateTest, PadsWithZerosAndTruncatesBack) {
  OpSpec pad = Op(OpKind::kPad, {}, 0);
  pad.size = 4;
  Tensor t = Iota({2, 3});
  Tensor padded = Resize(t, 0, 4);
  EXPECT_EQ(padded.shape, (Shape{4, 3}));
  EXPECT_EQ(padded.data, (std::vector<float>{0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0}));
  ExpectRoundTrip(pad, {t});
  Result<OpSpec> inv = InvertOp(pad, {{2, 3}});
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(inv->kind, OpKind::kTruncate);
  EXPECT_EQ(inv->size, 2);

  OpSpec truncate = Op(OpKind::kTruncate, {}, 1);
  truncate.size = 2;
  Tensor cut = Resize(t, 1, 2);
  EXPECT_EQ(cut.data, (std::vector<float>{0, 1, 3, 4}));
  Result<OpSpec> grow = InvertOp(truncate, {{2, 3}});
  ASSERT_TRUE(grow.ok());
  EXPECT_EQ(grow->kind, OpKind::kPad);
  EXPECT_EQ(grow->size, 3);
  pad.size = 1;
  EXPECT_FALSE(InferShapes(pad, {{2, 3}}).ok());
}

TEST(ConcatSplitTest, JoinAndCutAlongAnAxis) {
  Tensor a = Iota({2, 2});
  Tensor b = Iota({2, 3});
  for (float& x : b.data) x += 100;
  Tensor joined = Concat({a, b}, 1);
  EXPECT_EQ(joined.shape, (Shape{2, 5}));
  EXPECT_EQ(joined.data, (std::vector<float>{0, 1, 100, 101, 102, 2, 3, 103, 104, 105}));
  std::vector<Tensor> parts = Split(joined, 1, {2, 3});
  EXPECT_EQ(parts[0].data, a.data);
  EXPECT_EQ(parts[1].data, b.data);
  ExpectRoundTrip(Op(OpKind::kConcat, {}, 1), {a, b});
  ExpectRoundTrip(Op(OpKind::kSplit, {1, 3}, 0), {Iota({4, 2})});
  EXPECT_FALSE(InferShapes(Op(OpKind::kConcat, {}, 0), {{2, 2}, {2, 3}}).ok());
  EXPECT_FALSE(InferShapes(Op(OpKind::kSplit, {1, 1}, 0), {{4, 2}}).ok());
}

TEST(CustomTest, HasShapesButNoInverse) {
  OpSpec op = Op(OpKind::kCustom, {4, 4});
  op.custom_id = 7;
  Result<std::vector<Shape>> shapes = InferShapes(op, {{4, 4}, {1, 1}});
  ASSERT_TRUE(shapes.ok());
  EXPECT_EQ((*shapes)[0], (Shape{4, 4}));
  Result<OpSpec> inv = InvertOp(op, {{4, 4}, {1, 1}});
  EXPECT_EQ(inv.status().code(), StatusCode::kUnsupported);
}

TEST(ChainTest, PlacementRules) {
  OpSpec split = Op(OpKind::kSplit, {1, 1}, 0);
  OpSpec transpose = Op(OpKind::kTranspose, {1, 0});
  EXPECT_FALSE(ResolveChain({split, transpose}, {{2, 2}}).ok());
  EXPECT_FALSE(ResolveChain({transpose, Op(OpKind::kConcat, {}, 0)}, {{2, 2}}).ok());
  Result<Chain> two = ResolveChain({transpose}, {{2, 2}, {2, 2}});
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("first op must be concat or custom"), std::string::npos);
  EXPECT_FALSE(ResolveChain({}, {{2}, {2}}).ok());
  Result<Chain> identity = ResolveChain({}, {{3, 4}});
  ASSERT_TRUE(identity.ok());
  EXPECT_EQ(identity->outputs, (std::vector<Shape>{{3, 4}}));
}

TEST(ChainTest, LlamaQueryChainInvertsBitExactly) {
  // q_proj [Nq*D, E] -> query [E, Nq, D]: transpose, reshape, interleave, scale.
  const int64_t e = 8, nq = 2, d = 4;
  OpSpec scale = Op(OpKind::kScale);
  scale.factor = 0.5f;  // 1/sqrt(4)
  scale.inverse_factor = 2.0f;
  std::vector<OpSpec> ops = {Op(OpKind::kTranspose, {1, 0}), Op(OpKind::kReshape, {e, nq, d}),
                             Op(OpKind::kInterleave, {}, 2), scale};
  Result<Chain> forward = ResolveChain(ops, {{nq * d, e}});
  ASSERT_TRUE(forward.ok());
  EXPECT_EQ(forward->outputs[0], (Shape{e, nq, d}));
  Result<Chain> backward = InvertChain(*forward);
  ASSERT_TRUE(backward.ok());
  EXPECT_EQ(backward->outputs[0], (Shape{nq * d, e}));
  Tensor w = Iota({nq * d, e});
  Result<std::vector<Tensor>> mt = RunChain(*forward, {w});
  ASSERT_TRUE(mt.ok());
  // query[i][n][2j] = 0.5 * q_proj[n*D + j][i]; query[i][n][2j+1] = 0.5 * q_proj[n*D + j + D/2][i]
  for (int64_t i = 0; i < e; ++i)
    for (int64_t n = 0; n < nq; ++n)
      for (int64_t j = 0; j < d / 2; ++j) {
        EXPECT_EQ((*mt)[0].data[(i * nq + n) * d + 2 * j], 0.5f * w.data[(n * d + j) * e + i]);
        EXPECT_EQ((*mt)[0].data[(i * nq + n) * d + 2 * j + 1],
                  0.5f * w.data[(n * d + j + d / 2) * e + i]);
      }
  Result<std::vector<Tensor>> back = RunChain(*backward, *mt);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)[0].data, w.data);
}

}  // namespace
}  // namespace ckptbridge::engine
