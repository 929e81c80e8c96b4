// CRC-32C (Castagnoli): the published check value, and incremental updates
// at every split point agreeing with one-shot ones - the CPU instruction's
// 8-byte steps and byte tail must not care where a buffer starts or ends.
#include "host/base/checksum.h"

#include <gtest/gtest.h>

#include <boost/crc.hpp>
#include <cstdint>
#include <random>
#include <string>

namespace ckptbridge {
namespace {

uint32_t Reference(const std::string& bytes) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(bytes.data(), bytes.size());
  return crc.checksum();
}

TEST(Crc32cTest, CheckValues) {
  EXPECT_EQ(ComputeCrc32c("123456789", 9), 0xE3069283u);  // the CRC catalogue's check
  EXPECT_EQ(ComputeCrc32c("", 0), 0u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(ComputeCrc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
}

TEST(Crc32cTest, AnySplitAndAlignmentGivesTheTableDrivenValue) {
  std::mt19937 rng(7);
  std::string bytes(300, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  for (size_t start = 0; start < 9; ++start) {
    const std::string part = bytes.substr(start);
    const uint32_t want = Reference(part);
    EXPECT_EQ(ComputeCrc32c(part.data(), part.size()), want) << start;
    for (size_t split = 0; split <= part.size(); split += 7) {
      Crc32c crc;
      crc.Update(part.data(), split);
      crc.Update(part.data() + split, part.size() - split);
      ASSERT_EQ(crc.value(), want) << start << " " << split;
    }
  }
}

TEST(Crc32cTest, LongInputsAcrossTheThreeWayStripesGiveTheTableDrivenValue) {
  // The SSE4.2 path runs three chains over 3 x 4096-byte stripes and joins
  // them; lengths around those boundaries, and splits inside them.
  std::mt19937 rng(11);
  std::string bytes(3 * 4096 * 3 + 100, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  for (size_t size : {size_t{12287}, size_t{12288}, size_t{12289}, size_t{12288 + 8}, size_t{24576},
                      size_t{24576 + 4095}, bytes.size()}) {
    const std::string part = bytes.substr(0, size);
    const uint32_t want = Reference(part);
    EXPECT_EQ(ComputeCrc32c(part.data(), part.size()), want) << size;
    for (size_t split : {size_t{1}, size_t{4096}, size_t{5000}, size / 2}) {
      Crc32c crc;
      crc.Update(part.data(), split);
      crc.Update(part.data() + split, part.size() - split);
      ASSERT_EQ(crc.value(), want) << size << " " << split;
    }
  }
  const std::string zeros(3 * 4096 * 2, '\0');
  EXPECT_EQ(ComputeCrc32c(zeros.data(), zeros.size()), Reference(zeros));
}

}  // namespace
}  // namespace ckptbridge
