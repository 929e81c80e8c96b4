// Tests for the f32 <-> narrow float conversions: the single rounding every
// conversion depends on.
#include "host/base/numeric.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace ckptbridge {
namespace {

TEST(Bf16Test, ExactValuesRoundTrip) {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 0.15625f, 3.0e38f, 1.0e-38f}) {
    const uint16_t h = F32ToBf16(f);
    // Values with at most 8 significant bits survive exactly.
    if ((FloatBits(f) & 0xffffu) == 0) {
      EXPECT_EQ(Bf16ToF32(h), f) << f;
    }
  }
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(-2.0f), 0xc000);
}

TEST(Bf16Test, RoundsToNearestEvenOnTies) {
  // 1.0 + 2^-8 lies exactly between 1.0 (even mantissa) and 1.0 + 2^-7.
  EXPECT_EQ(F32ToBf16(BitsToFloat(0x3f808000u)), 0x3f80);
  // 1.0 + 3*2^-8 lies between 1.0 + 2^-7 (odd) and 1.0 + 2^-6 (even): up.
  EXPECT_EQ(F32ToBf16(BitsToFloat(0x3f818000u)), 0x3f82);
  // Just above a tie rounds up, just below rounds down.
  EXPECT_EQ(F32ToBf16(BitsToFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(F32ToBf16(BitsToFloat(0x3f807fffu)), 0x3f80);
}

TEST(Bf16Test, InfinityAndOverflow) {
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(F32ToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  // The largest f32 rounds past the largest bf16 (0x7f7f) to +Inf.
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(F32ToBf16(BitsToFloat(0x7f7f7fffu)), 0x7f7f);
}

TEST(Bf16Test, NanStaysNanAndKeepsSign) {
  // A NaN whose payload lives only in the low bits must not become Inf.
  const uint16_t h = F32ToBf16(BitsToFloat(0x7f800001u));
  EXPECT_TRUE(std::isnan(Bf16ToF32(h)));
  const uint16_t neg = F32ToBf16(BitsToFloat(0xffc00000u));
  EXPECT_TRUE(std::isnan(Bf16ToF32(neg)));
  EXPECT_TRUE(neg & 0x8000u);
}

TEST(Bf16Test, Subnormals) {
  // The smallest bf16 subnormal, 2^-133, is exact.
  const float tiny = std::ldexp(1.0f, -133);
  EXPECT_EQ(F32ToBf16(tiny), 0x0001);
  EXPECT_EQ(Bf16ToF32(0x0001), tiny);
  // Half of it is a tie between 0 and the smallest subnormal: to even (0).
  EXPECT_EQ(F32ToBf16(std::ldexp(1.0f, -134)), 0x0000);
  // Three halves is a tie between 1 and 2 ulps: to even (2).
  EXPECT_EQ(F32ToBf16(std::ldexp(3.0f, -134)), 0x0002);
}

TEST(F16Test, ExhaustiveRoundTripOfEveryHalf) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    const uint16_t back = F32ToF16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(back))) << h;
    } else {
      EXPECT_EQ(back, h) << h;
    }
  }
}

TEST(F16Test, RoundingAndLimits) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);               // largest finite
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);               // ties away to Inf
  EXPECT_EQ(F32ToF16(65519.0f), 0x7bff);
  // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: to even.
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even 0
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);  // tie to even 2
}

TEST(F8Test, E4M3Values) {
  EXPECT_EQ(F8E4M3ToF32(0x00), 0.0f);
  EXPECT_EQ(F8E4M3ToF32(0x38), 1.0f);    // exp 7, mant 0
  EXPECT_EQ(F8E4M3ToF32(0x7e), 448.0f);  // largest finite
  EXPECT_EQ(F8E4M3ToF32(0xfe), -448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0x7f)));
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0xff)));
}

TEST(F8Test, E5M2AndE8M0Values) {
  EXPECT_EQ(F8E5M2ToF32(0x3c), 1.0f);
  EXPECT_EQ(F8E5M2ToF32(0x7b), 57344.0f);
  EXPECT_TRUE(std::isinf(F8E5M2ToF32(0x7c)));
  EXPECT_EQ(F8E8M0ToF32(127), 1.0f);
  EXPECT_EQ(F8E8M0ToF32(130), 8.0f);
  EXPECT_EQ(F8E8M0ToF32(0), std::ldexp(1.0f, -127));
  EXPECT_TRUE(std::isnan(F8E8M0ToF32(0xff)));
}

TEST(BulkConversionTest, UnalignedSourceAndEveryWritableType) {
  // bf16 values 1, -2, 0.5 starting at an odd address.
  std::vector<unsigned char> raw = {0xaa, 0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3f};
  float out[3];
  ASSERT_TRUE(ToF32(DType::kBF16, raw.data() + 1, out, 3).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 0.5f);

  const float values[2] = {1.5f, -0.25f};
  for (DType t : {DType::kBF16, DType::kF16, DType::kF32, DType::kF64}) {
    std::vector<unsigned char> buffer(2 * DTypeSize(t));
    ASSERT_TRUE(FromF32(t, values, buffer.data(), 2).ok());
    float back[2];
    ASSERT_TRUE(ToF32(t, buffer.data(), back, 2).ok());
    EXPECT_EQ(back[0], 1.5f) << ZarrName(t);
    EXPECT_EQ(back[1], -0.25f) << ZarrName(t);
  }
}

TEST(BulkConversionTest, IntegersWidenByValueAndCannotBeWritten) {
  const int32_t ints[3] = {-7, 0, 123456};
  float out[3];
  ASSERT_TRUE(ToF32(DType::kI32, ints, out, 3).ok());
  EXPECT_EQ(out[0], -7.0f);
  EXPECT_EQ(out[2], 123456.0f);
  unsigned char sink[8];
  Status s = FromF32(DType::kI32, out, sink, 1);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("int32"), std::string::npos);
}

}  // namespace
}  // namespace ckptbridge
