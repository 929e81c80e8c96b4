// host/base/numeric.h - element conversions to and from the f32 working type.
//
// The engine does all arithmetic in f32 and rounds once, at the end, to the
// target dtype (round-to-nearest-even, like numpy / ml_dtypes `astype`).
// These functions are that one rounding, and the exact widening on the way in.
//
// Rounding rules (f32 -> narrower):
//  - finite values round to nearest, ties to even; values past the largest
//    finite value become +-Inf;
//  - +-Inf stays +-Inf; NaN stays NaN (sign kept, made quiet, payload
//    truncated but never turned into Inf);
//  - subnormal results are produced exactly where representable.
//
// Source pointers need not be aligned: safetensors data may start anywhere.
#ifndef CKPTBRIDGE_HOST_BASE_NUMERIC_H_
#define CKPTBRIDGE_HOST_BASE_NUMERIC_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "host/base/dtype.h"
#include "host/base/status.h"

namespace ckptbridge {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// bfloat16 is the top half of an f32.
inline float Bf16ToF32(uint16_t h) { return BitsToFloat(static_cast<uint32_t>(h) << 16); }
inline uint16_t F32ToBf16(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep the sign, force quiet
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);
float F8E4M3ToF32(uint8_t b);  // "fn" variant: no Inf, S.1111.111 is NaN
float F8E5M2ToF32(uint8_t b);
float F8E8M0ToF32(uint8_t b);  // a power of two 2^(b-127); 0xff is NaN

// True if values of `dtype` can be widened to f32 (ToF32).
bool ReadableAsF32(DType dtype);
// True if FromF32 can produce `dtype`.
bool WritableFromF32(DType dtype);

// Widens `n` elements of `dtype` at `src` into `dst`. Floating types widen
// exactly (f64 rounds); integer types convert by value.
Status ToF32(DType dtype, const void* src, float* dst, size_t n);

// Rounds `n` f32 values into `dtype` at `dst` (BF16, F16, F32, F64).
Status FromF32(DType dtype, const float* src, void* dst, size_t n);

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_NUMERIC_H_
