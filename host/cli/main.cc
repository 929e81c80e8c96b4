// The `ckptbridge` command-line tool.
#include <malloc.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "host/cli/commands.h"

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
