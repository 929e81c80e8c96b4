// wren_test - the conformance kit from an author's own test program.
//
// `ctest` already runs `ckptbridge plugins check` on the plugin; this shows
// the same checks driven through the testkit library, which is what to use
// from a GoogleTest (or any other) suite of your own.
#include <iostream>

#include "ckptbridge/testkit/conformance.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: wren_test PLUGIN_FILE\n";
    return 2;
  }
  ckptbridge::testkit::Options options;
  options.plugin = argv[1];
  ckptbridge::testkit::Report report = ckptbridge::testkit::CheckPlugin(options);
  std::cout << ckptbridge::testkit::FormatReport(report);
  // A plugin with sample configs must get past the skips to the round trips.
  if (report.Count(ckptbridge::testkit::Outcome::kSkip) != 0) {
    std::cerr << "wren_test: checks were skipped\n";
    return 1;
  }
  return report.ok() ? 0 : 1;
}
