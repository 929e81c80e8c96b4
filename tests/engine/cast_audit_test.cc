// The cast audit (host/engine/cast_audit.h): its rounding is FromF32's bit for
// bit, its measurements equal what is computed here element by element, and
// its policy turns an overflow into an error that names what happened.
#include "host/engine/cast_audit.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "host/base/numeric.h"

namespace ckptbridge::engine {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// What the audit must report for `values` rounded to `dtype`, computed the
// slow way: round with FromF32, widen with ToF32, compare in double.
CastStats Reference(DType dtype, const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  EXPECT_TRUE(FromF32(dtype, values.data(), bits.data(), values.size()).ok());
  std::vector<float> back(values.size());
  EXPECT_TRUE(ToF32(dtype, bits.data(), back.data(), values.size()).ok());
  CastStats s;
  s.elements = values.size();
  for (size_t i = 0; i < values.size(); ++i) {
    const double x = values[i], y = back[i];
    if (std::isnan(x)) {
      ++s.nans;
      continue;
    }
    if (std::isinf(x)) continue;
    if (std::isinf(y)) {
      ++s.overflows;
      s.max_overflow_magnitude = std::max(s.max_overflow_magnitude, std::fabs(x));
      continue;
    }
    // The audit divides in f32; so does the reference, to compare exactly.
    const float err = static_cast<float>(std::fabs(y - x));
    s.max_abs_error = std::max<double>(s.max_abs_error, err);
    if (x != 0) {
      s.max_rel_error =
          std::max<double>(s.max_rel_error, err / static_cast<float>(std::fabs(values[i])));
    }
    if (x != 0 && y == 0) ++s.underflows;
  }
  return s;
}

void ExpectStatsEq(const CastStats& got, const CastStats& want) {
  EXPECT_EQ(got.elements, want.elements);
  EXPECT_EQ(got.max_abs_error, want.max_abs_error);
  EXPECT_EQ(got.max_rel_error, want.max_rel_error);
  EXPECT_EQ(got.overflows, want.overflows);
  EXPECT_EQ(got.max_overflow_magnitude, want.max_overflow_magnitude);
  EXPECT_EQ(got.nans, want.nans);
  EXPECT_EQ(got.underflows, want.underflows);
}

TEST(CastAuditTest, KnownBf16ErrorsAreExact) {
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even, 1 (error 2^-8,
  // relative 2^-8 / (1 + 2^-8)). 0.1f rounds to 0.10009765625.
  const std::vector<float> values = {1.0f + 0x1p-8f, 0.1f, -3.0f, 0.0f, -0.0f};
  std::vector<uint16_t> out(values.size());
  CastStats stats;
  ASSERT_TRUE(CastFromF32(DType::kBF16, values.data(), out.data(), values.size(), stats).ok());
  const double rel_tie = 0x1p-8 / (1.0 + 0x1p-8);
  const double err_tenth = 0.10009765625 - static_cast<double>(0.1f);
  const double rel_tenth = err_tenth / static_cast<double>(0.1f);
  EXPECT_EQ(stats.elements, 5u);
  EXPECT_EQ(stats.max_abs_error, std::ldexp(1.0, -8));
  EXPECT_NEAR(stats.max_rel_error, std::max(rel_tie, rel_tenth), 1e-9);
  EXPECT_EQ(stats.overflows, 0u);
  EXPECT_EQ(stats.nans, 0u);
  EXPECT_EQ(stats.underflows, 0u);
  EXPECT_EQ(Bf16ToF32(out[0]), 1.0f);
  EXPECT_EQ(Bf16ToF32(out[1]), 0.10009765625f);
  ExpectStatsEq(stats, Reference(DType::kBF16, values));
}

TEST(CastAuditTest, NanIsCountedInfIsNotAnOverflow) {
  const std::vector<float> values = {kNaN, -kNaN, kInf, -kInf, 2.0f};
  std::vector<uint16_t> out(values.size());
  CastStats stats;
  ASSERT_TRUE(CastFromF32(DType::kBF16, values.data(), out.data(), values.size(), stats).ok());
  EXPECT_EQ(stats.nans, 2u);
  EXPECT_EQ(stats.overflows, 0u);  // Inf was Inf already
  EXPECT_EQ(stats.max_abs_error, 0.0);
  EXPECT_TRUE(std::isnan(Bf16ToF32(out[0])));
  EXPECT_TRUE(stats.exact());
  // NaN alone is reported, never an error.
  CastAudit audit;
  EXPECT_TRUE(audit.Record("t", DType::kBF16, stats).ok());
}

TEST(CastAuditTest, OverflowAndUnderflowToF16) {
  // 65520 is the first value that rounds to Inf in f16; 1e-8 is below half
  // the smallest f16 subnormal (2^-24 ~ 5.96e-8) and flushes to zero.
  const std::vector<float> values = {65504.0f, 65519.0f, 65520.0f, -1e6f, 1e-8f, 3e-8f};
  std::vector<uint16_t> out(values.size());
  CastStats stats;
  ASSERT_TRUE(CastFromF32(DType::kF16, values.data(), out.data(), values.size(), stats).ok());
  EXPECT_EQ(stats.overflows, 2u);
  EXPECT_EQ(stats.max_overflow_magnitude, 1e6);
  EXPECT_EQ(stats.underflows, 1u);
  EXPECT_EQ(stats.max_rel_error, 1.0);  // the flushed value lost everything
  EXPECT_EQ(F16ToF32(out[2]), kInf);
  EXPECT_EQ(F16ToF32(out[3]), -kInf);
  ExpectStatsEq(stats, Reference(DType::kF16, values));
}

TEST(CastAuditTest, RoundsLikeFromF32BitForBit) {
  // Every 65537th bit pattern (all exponents, signs, NaN payloads, the
  // subnormal and overflow boundaries) plus the edges, in a length that is
  // neither a multiple of the lane count nor of a block.
  std::vector<float> values;
  for (uint64_t u = 0; u <= 0xffffffffu; u += 65537) values.push_back(BitsToFloat(uint32_t(u)));
  for (uint32_t u : {0x7f7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0x477fefffu, 0x477ff000u, 0x33000000u,
                     0x33000001u, 0x00000001u, 0x80800000u, 0x7f800001u, 0xffc00001u}) {
    values.push_back(BitsToFloat(u));
  }
  for (int i = 0; i < 7; ++i) values.push_back(static_cast<float>(i) * 0.3f);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    std::vector<uint16_t> want(values.size()), got(values.size());
    ASSERT_TRUE(FromF32(dtype, values.data(), want.data(), values.size()).ok());
    CastStats stats;
    ASSERT_TRUE(CastFromF32(dtype, values.data(), got.data(), values.size(), stats).ok());
    size_t differ = 0;
    for (size_t i = 0; i < values.size(); ++i) {
      if (got[i] != want[i] && differ++ < 3) {
        ADD_FAILURE() << ZarrName(dtype) << ": bits " << std::hex << FloatBits(values[i])
                      << " rounded to " << got[i] << ", FromF32 gives " << want[i];
      }
    }
    EXPECT_EQ(differ, 0u);
    ExpectStatsEq(stats, Reference(dtype, values));
  }
}

TEST(CastAuditTest, WiderDtypesAreNotMeasured) {
  const std::vector<float> values = {1e38f, 0.1f};
  std::vector<double> out(values.size());
  CastStats stats;
  ASSERT_TRUE(CastFromF32(DType::kF64, values.data(), out.data(), values.size(), stats).ok());
  EXPECT_EQ(stats.elements, 0u);
  EXPECT_EQ(out[1], static_cast<double>(0.1f));
  EXPECT_FALSE(NarrowsF32(DType::kF32));
  EXPECT_TRUE(NarrowsF32(DType::kF16));
  EXPECT_EQ(CastFromF32(DType::kI8, values.data(), out.data(), 1, stats).code(),
            StatusCode::kUnsupported);
}

TEST(CastAuditTest, OverflowIsAnErrorNamingTensorCountMagnitudeAndDtype) {
  // bfloat16's largest finite value is 3.3895e38; from 3.3962e38 on (half
  // an ulp above) values round to Inf, 3.39e38 still rounds down.
  const std::vector<float> values = {3.4e38f, -3.397e38f, 3.39e38f, 1.0f};
  std::vector<uint16_t> out(values.size());
  CastStats stats;
  ASSERT_TRUE(CastFromF32(DType::kBF16, values.data(), out.data(), values.size(), stats).ok());
  ASSERT_EQ(stats.overflows, 2u);
  EXPECT_EQ(Bf16ToF32(out[2]), Bf16ToF32(0x7f7f));
  CastAudit strict;
  const Status status = strict.Record("params.params.w", DType::kBF16, stats);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "tensor 'params.params.w': 2 finite values overflow to Inf when rounded to bfloat16 "
            "(largest magnitude 3.4e+38, the largest finite bfloat16 is 3.39e+38); keep float32 "
            "(--save-dtype float32), or pass --allow-lossy to write Inf (--cast-audit FILE then "
            "lists every tensor)");
  CastAudit lossy(/*allow_overflow=*/true);
  EXPECT_TRUE(lossy.Record("params.params.w", DType::kBF16, stats).ok());
  ASSERT_EQ(lossy.Tensors().size(), 1u);
  EXPECT_EQ(lossy.Tensors()[0].stats.overflows, 2u);
}

TEST(CastAuditTest, SlicesRecordedFromManyThreadsAddUp) {
  CastAudit audit;
  CastStats slice;
  slice.elements = 10;
  slice.nans = 1;
  slice.max_abs_error = 0.5;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      CastStats mine = slice;
      mine.max_rel_error = 0.01 * t;
      for (int i = 0; i < 100; ++i) ASSERT_TRUE(audit.Record("a", DType::kBF16, mine).ok());
      ASSERT_TRUE(audit.Record(t % 2 ? "b" : "c", DType::kF16, mine).ok());
    });
  }
  for (std::thread& t : threads) t.join();
  const std::vector<TensorCast> tensors = audit.Tensors();
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors[0].name, "a");
  EXPECT_EQ(tensors[0].stats.elements, 8000u);
  EXPECT_EQ(tensors[0].stats.nans, 800u);
  EXPECT_EQ(tensors[0].stats.max_rel_error, 0.07);

  const CastAuditSummary summary = Summarize(tensors);
  EXPECT_EQ(summary.tensors, 3u);
  EXPECT_EQ(summary.inexact, 3u);
  EXPECT_EQ(summary.nans, 808u);
  EXPECT_EQ(summary.worst_tensor, "a");
  EXPECT_EQ(SummaryLine(summary),
            "cast audit: 3 tensors rounded to a narrower dtype (3 inexact), worst max relative "
            "error 0.07 in 'a'; 0 overflows to Inf, 808 NaN, 0 flushed to zero");
  const nlohmann::json json = CastAuditJson(tensors, false);
  EXPECT_EQ(json["summary"]["tensors"], 3);
  EXPECT_EQ(json["tensors"][0]["name"], "a");
  EXPECT_EQ(json["tensors"][0]["dtype"], "bfloat16");
  EXPECT_EQ(json["tensors"][0]["elements"], 8000);
  EXPECT_EQ(json["tensors"][0]["max_abs_error"], 0.5);
}

}  // namespace
}  // namespace ckptbridge::engine
