// The `ckptbridge` command-line tool.
#include <malloc.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "host/cli/commands.h"

// Large buffers need no huge pages: the memory budget keeps and reuses them
// (host/base/memory_budget.h), so a 1 GiB conversion takes some 100k page
// faults in all, not the 750k of a fresh allocation per slice. Until then
// ckptbridge restarted itself with GLIBC_TUNABLES=glibc.malloc.hugetlb=1;
// with the buffers kept, that no longer paid: 1 GiB to HF from cold caches
// took 1.37-1.73 s without it against 1.77-2.03 s with it (6 runs each,
// alternated); 2 GB either way and to MaxText at both sizes took the same;
// and the restart itself cost some 20 ms of every command.
int main(int argc, char** argv) {
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
