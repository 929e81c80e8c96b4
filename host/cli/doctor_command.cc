// `ckptbridge doctor`: lint a checkpoint before work starts.
#include "host/cli/commands.h"

namespace ckptbridge::cli {

int RunDoctorCommand(const std::vector<std::string>&, std::ostream&, std::ostream& err) {
  err << "ckptbridge doctor: not yet\n";
  return 2;
}

}  // namespace ckptbridge::cli
