// tests/testing/proc_maps.h - how much of a file this process has mapped,
// read from /proc/self/maps: what the tests of windowed mappings
// (ReadOnlyFile::Map, safetensors::File::ReadRange) check is released.
#ifndef CKPTBRIDGE_TESTS_TESTING_PROC_MAPS_H_
#define CKPTBRIDGE_TESTS_TESTING_PROC_MAPS_H_

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace ckptbridge::testing {

// Bytes of `path` mapped into this process now (the sum of its mappings'
// page-rounded lengths).
inline uint64_t MappedBytesOf(const std::filesystem::path& path) {
  std::ifstream maps("/proc/self/maps");
  uint64_t total = 0;
  const std::string name = path.string();
  for (std::string line; std::getline(maps, line);) {
    if (line.size() < name.size() || line.compare(line.size() - name.size(), name.size(), name)) {
      continue;
    }
    uint64_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream(line) >> std::hex >> begin >> dash >> end;
    total += end - begin;
  }
  return total;
}

}  // namespace ckptbridge::testing

#endif  // CKPTBRIDGE_TESTS_TESTING_PROC_MAPS_H_
