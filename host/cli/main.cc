// The `ckptbridge` command-line tool.
#include <iostream>
#include <string>
#include <vector>

#include "host/cli/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  return ckptbridge::cli::RunCli(args, std::cout, std::cerr);
}
