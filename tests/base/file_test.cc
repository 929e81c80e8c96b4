// ReadOnlyFile and MappedRegion: windows of a file mapped on demand, with the
// errors that name what could not be read or mapped. The limits (address
// space, open files) are set in forked children, never in the test process.
#include "host/base/file.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/testing/proc_maps.h"
#include "tests/testing/temp_dir.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using testing::MappedBytesOf;

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) % 251);
  return s;
}

void Write(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Runs `body` in a forked child and returns its exit code (or 128 + signal).
template <typename Body>
int InChild(Body body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(ReadOnlyFileTest, MapsOnlyTheWindowAskedForAndUnmapsItWithTheRegion) {
  testing::TempDir dir;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const std::string bytes = Pattern(8 * page + 123);
  Write(dir / "f.bin", bytes);
  Result<ReadOnlyFile> file = ReadOnlyFile::Open(dir / "f.bin");
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ(file->size(), bytes.size());
  EXPECT_EQ(MappedBytesOf(dir / "f.bin"), 0u);  // opening maps nothing
  {
    // Unaligned at both ends, across three pages.
    const uint64_t offset = 3 * page - 5, length = page + 17;
    Result<MappedRegion> region = file->Map(offset, length);
    ASSERT_TRUE(region.ok()) << region.status().message();
    ASSERT_EQ(region->size(), length);
    EXPECT_EQ(std::memcmp(region->data(), bytes.data() + offset, length), 0);
    EXPECT_EQ(MappedBytesOf(dir / "f.bin"), 3 * page);
    MappedRegion moved = std::move(*region);
    EXPECT_EQ(moved.size(), length);
    EXPECT_EQ(region->size(), 0u);
    moved.DontNeed(0, length);  // pages are read again when touched
    EXPECT_EQ(std::memcmp(moved.data(), bytes.data() + offset, length), 0);
  }
  EXPECT_EQ(MappedBytesOf(dir / "f.bin"), 0u);

  // The last bytes of the file, and an empty window (nothing mapped, data()
  // still usable by memcpy).
  Result<MappedRegion> tail = file->Map(bytes.size() - 3, 3);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(tail->data()), 3),
            bytes.substr(bytes.size() - 3));
  Result<MappedRegion> empty = file->Map(bytes.size(), 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_NE(empty->data(), nullptr);
  EXPECT_EQ(empty->size(), 0u);
}

TEST(ReadOnlyFileTest, AWindowOutsideTheFileIsInternalNamingBothSides) {
  testing::TempDir dir;
  Write(dir / "f.bin", Pattern(100));
  Result<ReadOnlyFile> file = ReadOnlyFile::Open(dir / "f.bin");
  ASSERT_TRUE(file.ok());
  Result<MappedRegion> past = file->Map(90, 11, "tensor 'w'");
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), StatusCode::kInternal);
  EXPECT_EQ(past.status().message(),
            (dir / "f.bin").string() + ": tensor 'w': mapping bytes [90, 101) of a 100-byte file");
  // An offset + length that overflows is outside too.
  EXPECT_FALSE(file->Map(50, ~uint64_t{0}).ok());
}

TEST(ReadOnlyFileTest, PReadReadsAndNamesAFileThatShrank) {
  testing::TempDir dir;
  const std::string bytes = Pattern(5000);
  Write(dir / "f.bin", bytes);
  Result<ReadOnlyFile> file = ReadOnlyFile::Open(dir / "f.bin");
  ASSERT_TRUE(file.ok());
  std::string got(1000, '\0');
  ASSERT_TRUE(file->PRead(4000, got.data(), got.size()).ok());
  EXPECT_EQ(got, bytes.substr(4000));
  file->WillNeed(0, 1 << 20);  // a hint past the end is harmless

  fs::resize_file(dir / "f.bin", 4500);
  Status shrunk = file->PRead(4000, got.data(), got.size());
  ASSERT_FALSE(shrunk.ok());
  EXPECT_EQ(shrunk.code(), StatusCode::kDataLoss);
  EXPECT_EQ(shrunk.message(), (dir / "f.bin").string() +
                                  ": ends at byte 4500, 500 bytes short of what was read from it "
                                  "(it shrank)");
}

TEST(ReadOnlyFileTest, OpenRefusesWhatIsNotARegularFile) {
  testing::TempDir dir;
  Result<ReadOnlyFile> folder = ReadOnlyFile::Open(dir.path());
  ASSERT_FALSE(folder.ok());
  EXPECT_EQ(folder.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(folder.status().message(), dir.path().string() + ": not a regular file");
  Result<ReadOnlyFile> missing = ReadOnlyFile::Open(dir / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(ReadOnlyFileTest, OutOfAddressSpaceIsResourceExhaustedNamingTheBytes) {
  testing::TempDir dir;
  // A sparse 256 MiB file: mapping it needs the address space, not the disk.
  const uint64_t size = uint64_t{256} << 20;
  Write(dir / "big.bin", "x");
  fs::resize_file(dir / "big.bin", size);
  const int code = InChild([&] {
    Result<ReadOnlyFile> file = ReadOnlyFile::Open(dir / "big.bin");
    if (!file.ok()) return 10;
    // Leave 64 MiB above what the process has mapped now.
    std::ifstream status("/proc/self/status");
    uint64_t vm_kib = 0;
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("VmSize:", 0) == 0) vm_kib = std::stoull(line.substr(7));
    }
    const rlim_t limit = (vm_kib << 10) + (uint64_t{64} << 20);
    const rlimit as{limit, limit};
    if (vm_kib == 0 || setrlimit(RLIMIT_AS, &as) != 0) return 11;
    Result<MappedRegion> small = file->Map(size - 4096, 4096);
    if (!small.ok()) return 12;
    Result<MappedRegion> whole = file->Map(0, size, "tensor 'w'");
    if (whole.ok()) return 13;
    if (whole.status().code() != StatusCode::kResourceExhausted) return 14;
    const std::string want = (dir / "big.bin").string() +
                             ": tensor 'w': cannot map 268435456 bytes at offset 0: out of "
                             "address space";
    if (whole.status().message().rfind(want, 0) != 0) return 15;
    return 0;
  });
  EXPECT_EQ(code, 0);
}

TEST(ReadOnlyFileTest, RunningOutOfFileDescriptorsRaisesTheSoftLimitOnce) {
  testing::TempDir dir;
  Write(dir / "f.bin", "abc");
  const int code = InChild([&] {
    rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 10;
    if (limit.rlim_max < 64) return 0;  // nothing to raise to on this machine
    // Use up a soft limit of 32, then open one more.
    limit.rlim_cur = 32;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return 11;
    std::vector<ReadOnlyFile> open;
    for (int i = 0; i < 40; ++i) {
      Result<ReadOnlyFile> file = ReadOnlyFile::Open(dir / "f.bin");
      if (!file.ok()) return 12;
      open.push_back(std::move(*file));
    }
    rlimit now;
    getrlimit(RLIMIT_NOFILE, &now);
    return now.rlim_cur == limit.rlim_max ? 0 : 13;
  });
  EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace ckptbridge
