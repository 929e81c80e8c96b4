// `convert --verify` records a failed verification in the receipt too: a
// planted mapping bug (tests/check/plugins/planted_plugin.cc) round-trips, so
// the conversion succeeds, and only the fingerprints catch it.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "host/base/file.h"
#include "host/formats/orbax/checkpoint.h"
#include "tests/check/check_testing.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliRun;
using testing::RunCli;
using testing::TempDir;

TEST(ReceiptVerifyTest, AMismatchIsRecordedInBothDirections) {
  TempDir tmp;
  const fs::path src = tmp / "src", mt = tmp / "mt", hf = tmp / "hf";
  check_testing::WritePlanted(src, "transpose", /*fp8=*/false);
  CliRun run = RunCli({"convert", "-q", "--verify", "--plugin", CKB_PLANTED_PLUGIN, "--to",
                       "maxtext", src.string(), mt.string()});
  ASSERT_EQ(run.exit_code, 1) << run.out << run.err;
  Result<std::unique_ptr<orbax::ItemReader>> item = orbax::ItemReader::Open(mt);
  ASSERT_TRUE(item.ok()) << item.status().message();
  const json verification =
      (*item)->tree().custom_metadata.at("ckptbridge").at("receipt").at("verification");
  EXPECT_EQ(verification["result"], "mismatch");
  EXPECT_GT(verification["fingerprint_failures"].get<int>(), 0);
  EXPECT_EQ(verification["beyond_rounding"], 0);  // the values themselves round-trip

  run = RunCli({"convert", "-q", "--verify", "--plugin", CKB_PLANTED_PLUGIN, "--to", "hf",
                mt.string(), hf.string()});
  ASSERT_EQ(run.exit_code, 1) << run.out << run.err;
  Result<std::string> text = ReadFile(hf / "ckptbridge_receipt.json");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(json::parse(*text)["verification"]["result"], "mismatch");

  CliRun inspect = RunCli({"inspect", mt.string()});
  EXPECT_NE(inspect.out.find("    verified  mismatch at "), std::string::npos) << inspect.out;
}

}  // namespace
}  // namespace ckptbridge
