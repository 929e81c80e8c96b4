// fuzz/fuzz_safetensors_header.cc - a whole .safetensors file (length prefix,
// header JSON, data section) through safetensors::File::Open, the entry point
// every HF source goes through.
//
// The input is written to a memfd and opened by its /proc path, so the real
// mmap path runs. Checked on success: every tensor lies inside the data
// section with exactly numel * dtype-size bytes, the tensors tile the data
// section, and every byte of every tensor can be read (ASan would catch a
// pointer past the mapping).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "host/base/shape.h"
#include "host/formats/safetensors/reader.h"

namespace {

using ckptbridge::fuzz::CheckRefusal;
namespace st = ckptbridge::safetensors;

int MemFd() {
  static const int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemFd();
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(ftruncate(fd, 0) == 0);
  FUZZ_CHECK(pwrite(fd, data, size, 0) == static_cast<ssize_t>(size));
  const std::string path = "/proc/self/fd/" + std::to_string(fd);

  ckptbridge::Result<st::File> file = st::File::Open(path);
  if (!file.ok()) {
    CheckRefusal(file.status(), path);
    return 0;
  }
  const st::Header& header = file->header();
  FUZZ_CHECK(8 + header.header_bytes + header.data_bytes == size);
  uint64_t total = 0;
  unsigned checksum = 0;
  const st::TensorInfo* previous = nullptr;
  for (const st::TensorInfo& t : file->tensors()) {
    if (previous) FUZZ_CHECK(previous->name < t.name);  // sorted and unique
    previous = &t;
    FUZZ_CHECK(t.begin <= t.end && t.end <= header.data_bytes);
    ckptbridge::Result<int64_t> bytes =
        ckptbridge::NumBytes(t.shape, ckptbridge::DTypeSize(t.dtype));
    FUZZ_CHECK(bytes.ok() && static_cast<uint64_t>(*bytes) == t.num_bytes());
    FUZZ_CHECK(file->Find(t.name) == &t);
    total += t.num_bytes();
    const uint8_t* p = file->Data(t);
    for (uint64_t i = 0; i < t.num_bytes(); ++i) checksum += p[i];
  }
  FUZZ_CHECK(total == header.data_bytes);  // contiguous, no overlap, no hole
  (void)checksum;
  return 0;
}
