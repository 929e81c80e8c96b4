// host/cli/commands.h - the subcommands of `ckptbridge`.
//
// Each Run*Command parses its own arguments (Boost.Program_options), does
// its work and returns the process exit code: 0 success, 1 the work failed,
// 2 bad usage or bad input. Output goes to `out`, messages and progress to
// `err`.
#ifndef CKPTBRIDGE_HOST_CLI_COMMANDS_H_
#define CKPTBRIDGE_HOST_CLI_COMMANDS_H_

#include <signal.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "host/base/status.h"
#include "host/check/verify.h"
#include "host/engine/plan.h"
#include "host/plugin/loader.h"

namespace ckptbridge::cli {

// The whole command line; argv[0] is the program name.
int RunCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

int RunConvertCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int RunInspectCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int RunPluginsCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int RunStripCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int RunRestackCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int RunVerifyCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int RunPlanCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int RunDoctorCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// For `convert --verify`: verifies a finished conversion and prints the
// report to `out`; returns 0 (all match), 1 (a mismatch) or 2 (cannot compare).
int RunVerification(const check::VerifyOptions& options, const PluginRegistry& plugins, bool quiet,
                    std::ostream& out, std::ostream& err);
// Prints a verify report; returns 0 when it is OK, else 1.
int PrintVerifyReport(const check::VerifyReport& report, const std::string& source,
                      const std::string& converted, std::ostream& out);
// The summary `plan` prints and `convert` prints before starting: tensors,
// bytes read and written, shards, predicted peak memory (within a budget of
// `max_memory` bytes; 0: the default, engine::DefaultMaxMemory()).
void PrintPlanSummary(const engine::Plan& plan, int threads, uint64_t max_shard_bytes,
                      std::ostream& out, uint64_t max_memory = 0);

// Shared by the commands --------------------------------------------------

// Set by SIGINT/SIGTERM while a SignalScope lives; long commands poll it and
// stop between slices, removing their staging directory.
std::atomic<bool>& CancelFlag();

// Installs the SIGINT/SIGTERM handlers for its lifetime (and clears the flag).
class SignalScope {
 public:
  SignalScope();
  ~SignalScope();
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// --plugin FILE and --plugin-dir DIR, added to a command's options.
void AddPluginOptions(boost::program_options::options_description& options);
// Discovers plugins as those options (and the environment) say.
Result<PluginRegistry> DiscoverPlugins(const boost::program_options::variables_map& vars);

// Prints "ckptbridge <command>: <message>" and returns the exit code for it.
int ReportError(std::ostream& err, const std::string& command, const Status& status);

// Parses `args` (after the command name) into `vars`; prints a usage error and
// returns false (exit 2) when they do not parse.
bool ParseArgs(const std::vector<std::string>& args, const std::string& command,
               const boost::program_options::options_description& options,
               const boost::program_options::positional_options_description& positional,
               boost::program_options::variables_map& vars, std::ostream& err);

}  // namespace ckptbridge::cli

#endif  // CKPTBRIDGE_HOST_CLI_COMMANDS_H_
