// The `ckptbridge` command-line tool.
#include <malloc.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "host/cli/commands.h"

namespace {

// Large buffers on transparent huge pages. A conversion allocates a few
// buffers per slice (the slice, its transposed copy, the compressed
// chunks), and each new 4 KiB page of them costs a page fault: about one
// fault per page of the model, which in sys time cost more than the
// transposes (1 GiB llama: 750k faults, 2 s). glibc's `hugetlb=1` tunable
// asks for huge pages on what malloc maps (madvise), 40-60x fewer faults.
// glibc reads tunables only at start-up, so the process starts itself again
// once with the tunable added; GLIBC_TUNABLES that already names it (say
// glibc.malloc.hugetlb=0) is respected, and if exec fails it goes on as is.
void ReexecWithHugePageMalloc(char** argv) {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
  const char* found = std::getenv("GLIBC_TUNABLES");
  // A copy: setenv below may free what getenv pointed to.
  const std::optional<std::string> tunables =
      found != nullptr ? std::optional<std::string>(found) : std::nullopt;
  if (tunables && tunables->find("glibc.malloc.hugetlb") != std::string::npos) return;
  const std::string value = tunables && !tunables->empty() ? *tunables + ":glibc.malloc.hugetlb=1"
                                                           : std::string("glibc.malloc.hugetlb=1");
  // The binary's own path rather than /proc/self/exe, which would make the
  // process's name "exe" in ps and top.
  char self[4096];
  const ssize_t length = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (length <= 0) return;
  self[length] = '\0';
  if (::setenv("GLIBC_TUNABLES", value.c_str(), 1) != 0) return;
  ::execv(self, argv);
  ::unsetenv("GLIBC_TUNABLES");  // exec failed: run as we are
  if (tunables) ::setenv("GLIBC_TUNABLES", tunables->c_str(), 1);
#else
  (void)argv;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  ReexecWithHugePageMalloc(argv);
#ifdef __GLIBC__
  // One malloc arena instead of glibc's up to eight per core: each arena
  // reserves 64 MiB of address space (128 MiB while it is being made), which
  // under `ulimit -v` is taken from what --max-memory may use (README.md,
  // "Memory"). Slices allocate few, large buffers and small blocks come from
  // the per-thread caches, so the threads hardly contend for the one arena.
  // MALLOC_ARENA_MAX, when set, still decides.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 1);
#endif
  // Errors travel as Status; what still throws (an allocation or a thread
  // that cannot be made under `ulimit -v`, outside the conversion units that
  // catch it themselves) ends here, after unwinding has removed any staging
  // directory, instead of in std::terminate.
  try {
    std::vector<std::string> args(argv, argv + argc);
    return ckptbridge::cli::RunCli(args, std::cout, std::cerr);
  } catch (const std::bad_alloc&) {
    std::cerr << "ckptbridge: out of memory; under `ulimit -v` leave room for --max-memory plus "
                 "the overhead README.md states (\"Memory\")\n";
  } catch (const std::exception& e) {
    std::cerr << "ckptbridge: " << e.what() << '\n';
  }
  return 1;
}
