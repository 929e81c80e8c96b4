#include "host/base/checksum.h"

#include <array>
#include <boost/crc.hpp>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace ckptbridge {
namespace {

#if defined(__x86_64__)
// CRC-32C is linear: the register after data A then B is the register after
// A advanced over len(B) zero bytes, xor the register after B alone from 0.
// Advancing over a fixed number of zeros is a 32x32 bit matrix over GF(2),
// applied here a byte of the register at a time through four 256-entry
// tables.
class ZeroAdvance {
 public:
  explicit ZeroAdvance(size_t bytes) {
    // Column j of `one_bit`: the register bit j becomes after one zero bit
    // (reflected polynomial 0x82F63B78).
    Matrix power{};
    power[0] = 0x82F63B78u;
    for (int j = 1; j < 32; ++j) power[j] = 1u << (j - 1);
    Matrix total{};
    for (int j = 0; j < 32; ++j) total[j] = 1u << j;  // identity
    // Square-and-multiply over the 8 * bytes zero bits.
    for (uint64_t bits = uint64_t{8} * bytes; bits > 0; bits >>= 1) {
      if (bits & 1) total = Times(power, total);
      power = Times(power, power);
    }
    for (int k = 0; k < 4; ++k) {
      for (uint32_t b = 0; b < 256; ++b) table_[k][b] = Apply(total, b << (8 * k));
    }
  }
  uint32_t operator()(uint32_t crc) const {
    return table_[0][crc & 0xff] ^ table_[1][(crc >> 8) & 0xff] ^ table_[2][(crc >> 16) & 0xff] ^
           table_[3][crc >> 24];
  }

 private:
  using Matrix = std::array<uint32_t, 32>;
  static uint32_t Apply(const Matrix& m, uint32_t v) {
    uint32_t out = 0;
    for (int j = 0; v != 0; ++j, v >>= 1) {
      if (v & 1) out ^= m[j];
    }
    return out;
  }
  static Matrix Times(const Matrix& a, const Matrix& b) {  // a after b
    Matrix out{};
    for (int j = 0; j < 32; ++j) out[j] = Apply(a, b[j]);
    return out;
  }
  std::array<std::array<uint32_t, 256>, 4> table_{};
};

// CRC-32C with the SSE4.2 instruction, 8 bytes a step: some 10 times faster
// than the table-driven Boost.CRC, which took a sixth of a conversion's CPU
// once every written chunk was checksummed (the resume journal). One chain
// of crc32 instructions waits 3 cycles for each result; three independent
// chains over three blocks, joined with ZeroAdvance, keep the unit busy
// (kernels_bench BM_Crc32c on the reference machine: 9.8 -> 22 GB/s).
constexpr size_t kStripe = 4096;  // bytes of each of the three blocks

__attribute__((target("sse4.2"))) uint32_t ExtendSse42(uint32_t state, const uint8_t* data,
                                                       size_t n) {
  static const ZeroAdvance advance(kStripe);
  uint64_t crc = state;
  for (; n >= 3 * kStripe; data += 3 * kStripe, n -= 3 * kStripe) {
    uint64_t a = crc, b = 0, c = 0;
    for (size_t i = 0; i < kStripe; i += 8) {
      uint64_t wa, wb, wc;
      std::memcpy(&wa, data + i, 8);
      std::memcpy(&wb, data + kStripe + i, 8);
      std::memcpy(&wc, data + 2 * kStripe + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      c = _mm_crc32_u64(c, wc);
    }
    crc = advance(advance(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
          static_cast<uint32_t>(c);
  }
  for (; n >= 8; data += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    crc = _mm_crc32_u64(crc, word);
  }
  state = static_cast<uint32_t>(crc);
  for (; n > 0; ++data, --n) state = _mm_crc32_u8(state, *data);
  return state;
}

bool HasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#else
bool HasSse42() { return false; }
#endif

}  // namespace

// Reflected polynomial 0x1EDC6F41, init and xorout 0xFFFFFFFF. Boost.CRC
// where the CPU has no CRC-32C instruction.
struct Crc32c::Impl {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  uint32_t state = 0xFFFFFFFFu;  // the instruction's running state
};

Crc32c::Crc32c() : impl_(new Impl) {}
Crc32c::~Crc32c() { delete impl_; }
void Crc32c::Update(const void* data, size_t n) {
#if defined(__x86_64__)
  if (HasSse42()) {
    impl_->state = ExtendSse42(impl_->state, static_cast<const uint8_t*>(data), n);
    return;
  }
#endif
  impl_->crc.process_bytes(data, n);
}
uint32_t Crc32c::value() const { return HasSse42() ? ~impl_->state : impl_->crc.checksum(); }

uint32_t ComputeCrc32c(const void* data, size_t n) {
  Crc32c crc;
  crc.Update(data, n);
  return crc.value();
}

}  // namespace ckptbridge
