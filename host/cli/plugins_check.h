// host/cli/plugins_check.h - `ckptbridge plugins check FILE`.
#ifndef CKPTBRIDGE_HOST_CLI_PLUGINS_CHECK_H_
#define CKPTBRIDGE_HOST_CLI_PLUGINS_CHECK_H_

#include <ostream>
#include <string>
#include <vector>

namespace ckptbridge::cli {

// Runs the conformance kit (sdk/testkit) on one plugin file. `args` follow
// "plugins check". Exit code 0 when every check passed or was skipped, 1 when
// one failed, 2 on bad usage.
int RunPluginsCheckCommand(const std::vector<std::string>& args, std::ostream& out,
                           std::ostream& err);

}  // namespace ckptbridge::cli

#endif  // CKPTBRIDGE_HOST_CLI_PLUGINS_CHECK_H_
