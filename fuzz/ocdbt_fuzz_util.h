// fuzz/ocdbt_fuzz_util.h - how the OCDBT fuzz targets read their input.
//
// The first input byte picks a mode, the rest is the data:
//   0  a file as stored (envelope: magic, length, version, compression, body,
//      CRC-32C) - mutations mostly stop at the length or CRC check;
//   1  the same, with the length and CRC-32C recomputed by the harness, so
//      mutations reach the zstd decoder and the body decoder;
//   2  a bare body (decompressed), straight to the body decoder.
#ifndef CKPTBRIDGE_FUZZ_OCDBT_FUZZ_UTIL_H_
#define CKPTBRIDGE_FUZZ_OCDBT_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "host/base/checksum.h"
#include "host/formats/orbax/ocdbt_format.h"

namespace ckptbridge::fuzz {

enum class OcdbtMode { kAsStored = 0, kFixedUp = 1, kBody = 2 };

// Decompressed bodies above this are refused (the reader's own limits are
// larger; this keeps one input's memory small).
inline constexpr uint64_t kFuzzMaxBodyBytes = uint64_t{16} << 20;

// The body to decode for `data` in `mode`, or a refusal (checked here).
inline Result<std::string> OcdbtBody(OcdbtMode mode, std::string_view data, uint32_t magic,
                                     std::string_view label) {
  if (mode == OcdbtMode::kBody) return std::string(data);
  std::string file(data);
  if (mode == OcdbtMode::kFixedUp && file.size() >= 16) {
    const uint64_t length = file.size();
    for (int i = 0; i < 8; ++i) file[4 + i] = static_cast<char>((length >> (8 * i)) & 0xff);
    const uint32_t crc = ComputeCrc32c(file.data(), file.size() - 4);
    for (int i = 0; i < 4; ++i)
      file[file.size() - 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  }
  Result<std::string> body = orbax::ocdbt::DecodeEnvelope(file, magic, kFuzzMaxBodyBytes, label);
  if (!body.ok()) CheckRefusal(body.status(), label);
  return body;
}

}  // namespace ckptbridge::fuzz

#endif  // CKPTBRIDGE_FUZZ_OCDBT_FUZZ_UTIL_H_
