// host/base/checksum.h - CRC-32C (Castagnoli), the checksum of zarr v3 shard
// indexes and OCDBT, also used to fingerprint tensor bytes in `inspect`.
#ifndef CKPTBRIDGE_HOST_BASE_CHECKSUM_H_
#define CKPTBRIDGE_HOST_BASE_CHECKSUM_H_

#include <cstddef>
#include <cstdint>

namespace ckptbridge {

// Incremental CRC-32C: feed bytes in any number of Update() calls.
class Crc32c {
 public:
  Crc32c();
  ~Crc32c();
  Crc32c(const Crc32c&) = delete;
  Crc32c& operator=(const Crc32c&) = delete;

  void Update(const void* data, size_t n);
  uint32_t value() const;

 private:
  struct Impl;
  Impl* impl_;
};

// CRC-32C of one buffer.
uint32_t ComputeCrc32c(const void* data, size_t n);

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_CHECKSUM_H_
