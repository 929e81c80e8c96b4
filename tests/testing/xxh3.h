// tests/testing/xxh3.h - XXH3-128 as `xxh128sum` prints it, computed with
// libxxhash directly: the tests' own oracle for the hashes receipts record,
// independent of host/engine/receipt.cc.
#ifndef CKPTBRIDGE_TESTS_TESTING_XXH3_H_
#define CKPTBRIDGE_TESTS_TESTING_XXH3_H_

#include <xxhash.h>

#include <cstdio>
#include <string>
#include <string_view>

namespace ckptbridge::testing {

inline std::string Xxh3Of(std::string_view bytes) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(bytes.data(), bytes.size()));
  std::string hex;
  char digits[3];
  for (unsigned char b : canonical.digest) {
    std::snprintf(digits, sizeof digits, "%02x", b);
    hex += digits;
  }
  return hex;
}

}  // namespace ckptbridge::testing

#endif  // CKPTBRIDGE_TESTS_TESTING_XXH3_H_
