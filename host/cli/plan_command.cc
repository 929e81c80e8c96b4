// `ckptbridge plan`: a dry run from headers only.
#include "host/cli/commands.h"
#include "host/cli/format.h"

namespace ckptbridge::cli {

void PrintPlanSummary(const engine::Plan& plan, int, uint64_t, std::ostream& out) {
  out << "plan: " << plan.units.size() << " slices\n";
}

int RunPlanCommand(const std::vector<std::string>&, std::ostream&, std::ostream& err) {
  err << "ckptbridge plan: not yet\n";
  return 2;
}

}  // namespace ckptbridge::cli
