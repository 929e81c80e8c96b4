#include "host/base/numeric.h"

#include <cmath>
#include <limits>
#include <string>

namespace ckptbridge {

float F16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int shift = 0;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        ++shift;
      }
      mant &= 0x3ffu;
      bits = sign | (static_cast<uint32_t>(127 - 15 + 1 - shift) << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  return BitsToFloat(bits);
}

// Round-to-nearest-even f32 -> f16, after F. Giesen's float_to_half_fast3_rtne.
uint16_t F32ToF16(float f) {
  uint32_t u = FloatBits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint32_t out;
  if (u >= (127u + 16u) << 23) {                         // >= 65536: Inf or NaN
    out = (u > 0x7f800000u) ? 0x7e00u : 0x7c00u;         // NaN -> quiet NaN
  } else if (u < (113u << 23)) {                         // subnormal or zero
    const uint32_t magic_bits = 126u << 23;              // 0.5f
    float g = BitsToFloat(u) + BitsToFloat(magic_bits);  // the FPU rounds (RNE)
    out = FloatBits(g) - magic_bits;
  } else {
    uint32_t mant_odd = (u >> 13) & 1u;
    u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
    u += mant_odd;
    out = u >> 13;
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

float F8E4M3ToF32(uint8_t b) {
  const bool negative = b & 0x80u;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t mant = b & 0x7u;
  float value;
  if (exp == 0xf && mant == 0x7) {
    value = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    value = std::ldexp(static_cast<float>(mant), -9);  // mant/8 * 2^-6
  } else {
    value = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, static_cast<int>(exp) - 7);
  }
  return negative ? -value : value;
}

float F8E5M2ToF32(uint8_t b) { return F16ToF32(static_cast<uint16_t>(b) << 8); }

float F8E8M0ToF32(uint8_t b) {
  if (b == 0xffu) return std::numeric_limits<float>::quiet_NaN();
  if (b == 0) return BitsToFloat(0x00400000u);  // 2^-127 is an f32 subnormal
  return BitsToFloat(static_cast<uint32_t>(b) << 23);
}

bool ReadableAsF32(DType dtype) { return DTypeSize(dtype) != 0; }

bool WritableFromF32(DType dtype) {
  return dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF32 ||
         dtype == DType::kF64;
}

namespace {

template <typename T>
void IntToF32(const void* src, float* dst, size_t n) {
  const auto* p = static_cast<const unsigned char*>(src);
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

}  // namespace

Status ToF32(DType dtype, const void* src, float* dst, size_t n) {
  const auto* p = static_cast<const unsigned char*>(src);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return Status::Ok();
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = Bf16ToF32(h);
      }
      return Status::Ok();
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = F16ToF32(h);
      }
      return Status::Ok();
    case DType::kF64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      return Status::Ok();
    case DType::kF8E4M3:
      for (size_t i = 0; i < n; ++i) dst[i] = F8E4M3ToF32(p[i]);
      return Status::Ok();
    case DType::kF8E5M2:
      for (size_t i = 0; i < n; ++i) dst[i] = F8E5M2ToF32(p[i]);
      return Status::Ok();
    case DType::kF8E8M0:
      for (size_t i = 0; i < n; ++i) dst[i] = F8E8M0ToF32(p[i]);
      return Status::Ok();
    case DType::kBool:
      for (size_t i = 0; i < n; ++i) dst[i] = p[i] ? 1.0f : 0.0f;
      return Status::Ok();
    case DType::kU8:
      IntToF32<uint8_t>(src, dst, n);
      return Status::Ok();
    case DType::kI8:
      IntToF32<int8_t>(src, dst, n);
      return Status::Ok();
    case DType::kU16:
      IntToF32<uint16_t>(src, dst, n);
      return Status::Ok();
    case DType::kI16:
      IntToF32<int16_t>(src, dst, n);
      return Status::Ok();
    case DType::kU32:
      IntToF32<uint32_t>(src, dst, n);
      return Status::Ok();
    case DType::kI32:
      IntToF32<int32_t>(src, dst, n);
      return Status::Ok();
    case DType::kU64:
      IntToF32<uint64_t>(src, dst, n);
      return Status::Ok();
    case DType::kI64:
      IntToF32<int64_t>(src, dst, n);
      return Status::Ok();
    case DType::kInvalid:
      break;
  }
  return Internal("cannot widen dtype " + std::string(ZarrName(dtype)) + " to float32");
}

Status FromF32(DType dtype, const float* src, void* dst, size_t n) {
  auto* p = static_cast<unsigned char*>(dst);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return Status::Ok();
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = F32ToBf16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return Status::Ok();
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = F32ToF16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return Status::Ok();
    case DType::kF64:
      for (size_t i = 0; i < n; ++i) {
        double d = src[i];
        std::memcpy(p + 8 * i, &d, 8);
      }
      return Status::Ok();
    default:
      break;
  }
  return Unsupported("cannot write dtype " + std::string(ZarrName(dtype)) +
                     " (supported: bfloat16, float16, float32, float64)");
}

}  // namespace ckptbridge
