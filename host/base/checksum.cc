#include "host/base/checksum.h"

#include <boost/crc.hpp>

namespace ckptbridge {

// Reflected polynomial 0x1EDC6F41, init and xorout 0xFFFFFFFF.
struct Crc32c::Impl {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
};

Crc32c::Crc32c() : impl_(new Impl) {}
Crc32c::~Crc32c() { delete impl_; }
void Crc32c::Update(const void* data, size_t n) { impl_->crc.process_bytes(data, n); }
uint32_t Crc32c::value() const { return impl_->crc.checksum(); }

uint32_t ComputeCrc32c(const void* data, size_t n) {
  Crc32c crc;
  crc.Update(data, n);
  return crc.value();
}

}  // namespace ckptbridge
