// host/cli/format.h - how numbers and tables look on the terminal.
#ifndef CKPTBRIDGE_HOST_CLI_FORMAT_H_
#define CKPTBRIDGE_HOST_CLI_FORMAT_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/status.h"

namespace ckptbridge::cli {

// "209.5 KiB", "1.23 GiB", "512 B".
std::string HumanBytes(uint64_t bytes);

// "1:02:03", "4:05", "0.42 s".
std::string HumanSeconds(double seconds);

// Parses a size: a number with an optional unit, KB/MB/GB/TB (powers of
// 1000) or KiB/MiB/GiB/TiB and K/M/G/T (powers of 1024); "3GiB", "500MB",
// "1073741824". `flag` names the option in errors.
Result<uint64_t> ParseSize(std::string_view text, std::string_view flag);

// Left-aligned columns sized to their widest cell; the last column is not
// padded.
void PrintTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows);

// Peak resident set size of this process so far, in bytes.
uint64_t PeakRssBytes();
// Current resident set size, in bytes.
uint64_t CurrentRssBytes();

}  // namespace ckptbridge::cli

#endif  // CKPTBRIDGE_HOST_CLI_FORMAT_H_
