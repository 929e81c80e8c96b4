#include "host/engine/cast_audit.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "host/base/numeric.h"

namespace ckptbridge::engine {
namespace {

// The main loop works on vectors of kLanes floats with GCC/Clang vector
// extensions (SSE2 on x86-64, NEON on arm64: no -march needed): -O2 does
// not auto-vectorize a loop this branchy, and a scalar loop made the audited
// cast twice as slow as the plain one. The tail runs Step() per element.
constexpr size_t kLanes = 4;
typedef float F4 __attribute__((vector_size(16)));
typedef int32_t I4 __attribute__((vector_size(16)));
typedef uint32_t U4 __attribute__((vector_size(16)));
typedef uint16_t H4 __attribute__((vector_size(8)));
// Elements per block, after which the 32-bit lane counters are folded into
// the 64-bit totals (at most kBlock / kLanes per lane: no wrap-around).
constexpr size_t kBlock = size_t{1} << 16;

struct Lanes {
  float abs_error[kLanes] = {};
  float rel_error[kLanes] = {};
  float overflow_magnitude[kLanes] = {};
  uint32_t overflows[kLanes] = {};
  uint32_t nans[kLanes] = {};
  uint32_t underflows[kLanes] = {};

  void FoldInto(CastStats& stats) const {
    for (size_t k = 0; k < kLanes; ++k) {
      stats.max_abs_error = std::max<double>(stats.max_abs_error, abs_error[k]);
      stats.max_rel_error = std::max<double>(stats.max_rel_error, rel_error[k]);
      stats.max_overflow_magnitude =
          std::max<double>(stats.max_overflow_magnitude, overflow_magnitude[k]);
      stats.overflows += overflows[k];
      stats.nans += nans[k];
      stats.underflows += underflows[k];
    }
  }
};

// Branch-free twins of numeric.h's F32ToBf16 / F32ToF16, for the tail, and
// the four-lane versions below: bit for bit the same results
// (tests/engine/cast_audit_test.cc compares them).
inline uint16_t RoundBf16(float f) {
  const uint32_t u = FloatBits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x0040u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

inline uint16_t RoundF16(float f) {
  uint32_t u = FloatBits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  const uint32_t special = u > 0x7f800000u ? 0x7e00u : 0x7c00u;  // NaN, or Inf and overflow
  const uint32_t magic = 126u << 23;                             // 0.5f: the FPU rounds (RNE)
  const uint32_t small = FloatBits(BitsToFloat(u & 0x7fffffffu) + BitsToFloat(magic)) - magic;
  const uint32_t normal =
      (u + (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
  const uint32_t out = u >= (143u << 23) ? special : (u < (113u << 23) ? small : normal);
  return static_cast<uint16_t>(out | (sign >> 16));
}

// One element: rounds x, measures into lane k, returns the stored bits.
// Comparisons with NaN are false, which is what masks NaN and Inf inputs
// out of the error maxima; StepX4 is the same on four lanes.
template <uint16_t (*Round)(float), float (*Back)(uint16_t)>
inline uint16_t Step(float x, Lanes& lanes, size_t k) {
  constexpr float kMax = std::numeric_limits<float>::max();
  const uint16_t h = Round(x);
  const float y = Back(h);
  const float ax = std::fabs(x);
  const bool finite = ax <= kMax;
  const bool became_inf = std::fabs(y) > kMax;
  const bool overflow = finite & became_inf;
  const bool measured = finite & !became_inf;
  // y - x is exact in f32: the rounding error of a shorter significand.
  // Computed unconditionally and then selected, as in StepX4.
  const float diff = std::fabs(y - x);
  const float ratio = diff / ax;
  const float err = measured ? diff : 0.0f;
  const float rel = (measured & (ax > 0.0f)) ? ratio : 0.0f;
  lanes.abs_error[k] = std::max(lanes.abs_error[k], err);
  lanes.rel_error[k] = std::max(lanes.rel_error[k], rel);
  lanes.overflow_magnitude[k] = std::max(lanes.overflow_magnitude[k], overflow ? ax : 0.0f);
  lanes.overflows[k] += overflow;
  lanes.nans[k] += x != x;
  lanes.underflows[k] += (ax > 0.0f) & finite & (y == 0.0f);
  return h;
}

// RoundBf16 on four lanes: the stored bits (in the low half of each lane)
// and the value they stand for.
inline void RoundBf16x4(U4 u, U4& h, F4& y) {
  const U4 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const I4 nan = (I4)(u & 0x7fffffffu) > 0x7f800000;
  h = nan ? (u >> 16) | 0x0040u : rounded;
  y = (F4)(h << 16);
}

// RoundF16 on four lanes, and F16ToF32 of the result without its loop: a
// subnormal half is its mantissa times 2^-24, exactly.
inline void RoundF16x4(U4 bits, U4& h, F4& y) {
  const U4 sign = bits & 0x80000000u;
  const U4 u = bits ^ sign;
  const I4 ui = (I4)u;
  const U4 special = ui > 0x7f800000 ? U4{} + 0x7e00u : U4{} + 0x7c00u;
  const U4 magic = U4{} + (126u << 23);
  const U4 small = (U4)((F4)u + (F4)magic) - magic;
  const U4 normal = (u + (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
  h = (ui >= (143 << 23) ? special : (ui < (113 << 23) ? small : normal)) | (sign >> 16);
  const U4 half_sign = (h & 0x8000u) << 16;
  const U4 exp = (h >> 10) & 0x1fu;
  const U4 mant = h & 0x3ffu;
  const U4 wide_normal = half_sign | ((exp + 112u) << 23) | (mant << 13);
  const U4 wide_special = half_sign | 0x7f800000u | (mant << 13);
  const F4 subnormal = __builtin_convertvector((I4)mant, F4) * (1.0f / 16777216.0f);
  const U4 wide_subnormal = half_sign | (U4)subnormal;
  const I4 e = (I4)exp;
  y = (F4)(e == 0 ? wide_subnormal : (e == 31 ? wide_special : wide_normal));
}

template <void (*RoundX4)(U4, U4&, F4&)>
inline void StepX4(const float* src, unsigned char* dst, Lanes& lanes) {
  constexpr float kMax = std::numeric_limits<float>::max();
  F4 x;
  std::memcpy(&x, src, sizeof x);
  const U4 u = (U4)x;
  U4 h;
  F4 y;
  RoundX4(u, h, y);
  const H4 narrow = __builtin_convertvector(h, H4);
  std::memcpy(dst, &narrow, sizeof narrow);

  const F4 zero = {};
  const F4 ax = (F4)(u & 0x7fffffffu);
  const F4 ay = (F4)((U4)y & 0x7fffffffu);
  const I4 finite = ax <= kMax;  // false for NaN and Inf
  const I4 became_inf = ay > kMax;
  const I4 overflow = finite & became_inf;
  const I4 measured = finite & ~became_inf;
  const F4 diff = (F4)((U4)(y - x) & 0x7fffffffu);
  const F4 ratio = diff / ax;
  const F4 err = measured ? diff : zero;
  const F4 rel = (measured & (ax > zero)) ? ratio : zero;
  const F4 magnitude = overflow ? ax : zero;

  F4 abs_error, rel_error, overflow_magnitude;
  I4 overflows, nans, underflows;
  std::memcpy(&abs_error, lanes.abs_error, sizeof abs_error);
  std::memcpy(&rel_error, lanes.rel_error, sizeof rel_error);
  std::memcpy(&overflow_magnitude, lanes.overflow_magnitude, sizeof overflow_magnitude);
  std::memcpy(&overflows, lanes.overflows, sizeof overflows);
  std::memcpy(&nans, lanes.nans, sizeof nans);
  std::memcpy(&underflows, lanes.underflows, sizeof underflows);
  abs_error = err > abs_error ? err : abs_error;
  rel_error = rel > rel_error ? rel : rel_error;
  overflow_magnitude = magnitude > overflow_magnitude ? magnitude : overflow_magnitude;
  overflows -= overflow;  // a true lane is -1
  nans -= x != x;
  underflows -= (ax > zero) & finite & (y == zero);
  std::memcpy(lanes.abs_error, &abs_error, sizeof abs_error);
  std::memcpy(lanes.rel_error, &rel_error, sizeof rel_error);
  std::memcpy(lanes.overflow_magnitude, &overflow_magnitude, sizeof overflow_magnitude);
  std::memcpy(lanes.overflows, &overflows, sizeof overflows);
  std::memcpy(lanes.nans, &nans, sizeof nans);
  std::memcpy(lanes.underflows, &underflows, sizeof underflows);
}

template <uint16_t (*Round)(float), float (*Back)(uint16_t), void (*RoundX4)(U4, U4&, F4&)>
void AuditedCast16(const float* src, unsigned char* dst, size_t n, CastStats& stats) {
  size_t i = 0;
  while (i < n) {
    const size_t end = std::min(n, i + kBlock);
    Lanes lanes;
    for (; i + kLanes <= end; i += kLanes) StepX4<RoundX4>(src + i, dst + 2 * i, lanes);
    for (; i < end; ++i) {
      const uint16_t h = Step<Round, Back>(src[i], lanes, 0);
      std::memcpy(dst + 2 * i, &h, 2);
    }
    lanes.FoldInto(stats);
  }
  stats.elements += n;
}

// The largest finite value of `dtype`, for messages.
double MaxFinite(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return Bf16ToF32(0x7f7f);
    case DType::kF16:
      return 65504.0;
    default:
      return std::numeric_limits<float>::max();
  }
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

void CastStats::Merge(const CastStats& other) {
  elements += other.elements;
  max_abs_error = std::max(max_abs_error, other.max_abs_error);
  max_rel_error = std::max(max_rel_error, other.max_rel_error);
  overflows += other.overflows;
  max_overflow_magnitude = std::max(max_overflow_magnitude, other.max_overflow_magnitude);
  nans += other.nans;
  underflows += other.underflows;
}

bool NarrowsF32(DType dtype) { return dtype == DType::kBF16 || dtype == DType::kF16; }

Status CastFromF32(DType dtype, const float* src, void* dst, size_t n, CastStats& stats) {
  auto* p = static_cast<unsigned char*>(dst);
  switch (dtype) {
    case DType::kBF16:
      AuditedCast16<RoundBf16, Bf16ToF32, RoundBf16x4>(src, p, n, stats);
      return Status::Ok();
    case DType::kF16:
      AuditedCast16<RoundF16, F16ToF32, RoundF16x4>(src, p, n, stats);
      return Status::Ok();
    default:
      return FromF32(dtype, src, dst, n);
  }
}

Status CastAudit::Record(const std::string& name, DType dtype, const CastStats& slice) {
  CastStats total;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto [it, inserted] = index_.emplace(name, tensors_.size());
    if (inserted) tensors_.push_back({name, dtype, CastStats()});
    tensors_[it->second].stats.Merge(slice);
    total = tensors_[it->second].stats;
  }
  if (slice.overflows == 0 || allow_overflow_) return Status::Ok();
  const std::string dtype_name(ZarrName(dtype));
  std::string message = "tensor '" + name + "': " + std::to_string(total.overflows) +
                        " finite value" + (total.overflows == 1 ? "" : "s") +
                        " overflow to Inf when rounded to " + dtype_name + " (largest magnitude " +
                        Number(total.max_overflow_magnitude) + ", the largest finite " +
                        dtype_name + " is " + Number(MaxFinite(dtype)) +
                        "); keep float32 (--save-dtype float32), or pass --allow-lossy to write "
                        "Inf (--cast-audit FILE then lists every tensor)";
  return InvalidArgument(message);
}

std::vector<TensorCast> CastAudit::Tensors() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tensors_;
}

CastAuditSummary Summarize(const std::vector<TensorCast>& tensors) {
  CastAuditSummary s;
  for (const TensorCast& t : tensors) {
    ++s.tensors;
    s.inexact += !t.stats.exact();
    if (t.stats.max_rel_error > s.worst_rel_error) {
      s.worst_rel_error = t.stats.max_rel_error;
      s.worst_tensor = t.name;
    }
    s.overflows += t.stats.overflows;
    s.nans += t.stats.nans;
    s.underflows += t.stats.underflows;
  }
  return s;
}

std::string SummaryLine(const CastAuditSummary& s) {
  std::string line = "cast audit: " + std::to_string(s.tensors) + " tensor" +
                     (s.tensors == 1 ? "" : "s") + " rounded to a narrower dtype (" +
                     std::to_string(s.inexact) + " inexact)";
  if (!s.worst_tensor.empty()) {
    line +=
        ", worst max relative error " + Number(s.worst_rel_error) + " in '" + s.worst_tensor + "'";
  }
  line += "; " + std::to_string(s.overflows) + " overflow" + (s.overflows == 1 ? "" : "s") +
          " to Inf, " + std::to_string(s.nans) + " NaN, " + std::to_string(s.underflows) +
          " flushed to zero";
  return line;
}

nlohmann::json CastAuditJson(const std::vector<TensorCast>& tensors, bool allow_lossy) {
  const CastAuditSummary s = Summarize(tensors);
  nlohmann::json rows = nlohmann::json::array();
  for (const TensorCast& t : tensors) {
    rows.push_back({{"name", t.name},
                    {"dtype", std::string(ZarrName(t.dtype))},
                    {"elements", t.stats.elements},
                    {"max_abs_error", t.stats.max_abs_error},
                    {"max_rel_error", t.stats.max_rel_error},
                    {"overflows", t.stats.overflows},
                    {"max_overflow_magnitude", t.stats.max_overflow_magnitude},
                    {"nans", t.stats.nans},
                    {"underflows", t.stats.underflows}});
  }
  return {{"allow_lossy", allow_lossy},
          {"summary",
           {{"tensors", s.tensors},
            {"inexact", s.inexact},
            {"worst_rel_error", s.worst_rel_error},
            {"worst_tensor", s.worst_tensor},
            {"overflows", s.overflows},
            {"nans", s.nans},
            {"underflows", s.underflows}}},
          {"tensors", rows}};
}

}  // namespace ckptbridge::engine
