// `ckptbridge plan` (a dry run from headers) against what `convert` then
// really writes, the memory and disk refusals, and `convert --verify`.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "host/check/estimate.h"
#include "host/check/open.h"
#include "host/engine/execute.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using testing::CliRun;
using testing::RunCli;
using testing::TempDir;

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}
std::string Show(const CliRun& run) { return "out:\n" + run.out + "\nerr:\n" + run.err; }

const fs::path& Llama() {
  static const fs::path p = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";
  return p;
}

TEST(PlanTest, ToMaxTextListsExactlyWhatConvertWrites) {
  TempDir tmp;
  const CliRun plan = RunCli({"plan", "--to", "maxtext", Llama().string()});
  ASSERT_EQ(plan.exit_code, 0) << Show(plan);
  const fs::path mt = tmp.path() / "mt";
  const CliRun convert = RunCli({"convert", "--to", "maxtext", Llama().string(), mt.string()});
  ASSERT_EQ(convert.exit_code, 0) << Show(convert);
  for (const auto& [name, values] : testing::ReadOrbax(mt)) {
    if (name.rfind("params.", 0) != 0) continue;  // step
    EXPECT_TRUE(Contains(plan.out, name + " ")) << name << "\n" << plan.out;
  }
  EXPECT_TRUE(Contains(plan.out, "[64, 2, 4, 16]  bfloat16  [64, 1, 4, 16]")) << plan.out;
  EXPECT_TRUE(Contains(plan.out, "read:   209 KiB in 21 tensors")) << plan.out;
  EXPECT_TRUE(Contains(plan.out, "write:  209 KiB in 12 tensors, 21 slices")) << plan.out;
  EXPECT_TRUE(Contains(plan.out, "memory: peak ~")) << plan.out;
  EXPECT_TRUE(Contains(convert.out, "into 12 tensors (209 KiB")) << convert.out;
  // convert prints the same summary before it starts.
  EXPECT_TRUE(Contains(convert.err,
                       "plan: 21 slices, read 209 KiB in 21 tensors, write 209 KiB "
                       "in 12 tensors; peak memory ~"))
      << convert.err;
}

TEST(PlanTest, ToHfShardsMatchTheExport) {
  TempDir tmp;
  const fs::path mt = tmp.path() / "mt", hf = tmp.path() / "hf";
  ASSERT_EQ(RunCli({"convert", "-q", "--to", "maxtext", Llama().string(), mt.string()}).exit_code,
            0);
  const CliRun plan = RunCli({"plan", "--to", "hf", "--max-shard-size", "100KiB", mt.string()});
  ASSERT_EQ(plan.exit_code, 0) << Show(plan);
  ASSERT_EQ(RunCli({"convert", "-q", "--to", "hf", "--max-shard-size", "100KiB", mt.string(),
                    hf.string()})
                .exit_code,
            0);
  size_t shards = 0;
  for (const auto& entry : fs::directory_iterator(hf)) {
    if (entry.path().extension() != ".safetensors") continue;
    ++shards;
    const std::string line =
        entry.path().filename().string() + "  ";  // "model-00001-of-00003.safetensors  5 tensors"
    EXPECT_TRUE(Contains(plan.out, line)) << line << "\n" << plan.out;
  }
  EXPECT_EQ(shards, 3u);
  for (const auto& [name, values] : testing::ReadHf(hf)) {
    EXPECT_TRUE(Contains(plan.out, name + " ")) << name;
  }
}

TEST(PlanTest, MemoryFollowsTheEngineBudget) {
  check::OpenOptions open;
  open.source = Llama();
  Result<PluginRegistry> plugins = PluginRegistry::Discover({});
  ASSERT_TRUE(plugins.ok());
  Result<check::Opened> opened = check::OpenSource(open, engine::Direction::kToMaxText, *plugins);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  Result<check::PlanEstimate> e = check::Estimate(opened->plan, 8, uint64_t{3} << 30, 0);
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->units, 21u);
  ASSERT_GE(e->unit_memory.size(), 8u);
  EXPECT_TRUE(std::is_sorted(e->unit_memory.rbegin(), e->unit_memory.rend()));
  // The engine's own estimate, slice by slice.
  std::vector<uint64_t> engine_memory;
  for (const engine::Unit& u : opened->plan.units) {
    engine_memory.push_back(engine::UnitMemory(opened->plan, u));
  }
  std::sort(engine_memory.rbegin(), engine_memory.rend());
  EXPECT_EQ(e->unit_memory, engine_memory);
  uint64_t eight = check::kBaseMemoryBytes;
  for (int i = 0; i < 8; ++i) eight += e->unit_memory[i];
  EXPECT_EQ(e->peak_memory, eight);
  // A budget caps what is in flight, except for a slice larger than it.
  const uint64_t largest = e->unit_memory[0];
  EXPECT_EQ(check::PeakMemory(e->unit_memory, 8, largest + 1),
            check::kBaseMemoryBytes + largest + 1);
  EXPECT_EQ(check::PeakMemory(e->unit_memory, 8, 1), check::kBaseMemoryBytes + largest);
  EXPECT_TRUE(check::FitMemory(*e, largest).fits);
  EXPECT_FALSE(check::FitMemory(*e, largest - 1).fits);
  EXPECT_EQ(check::FitMemory(*e, largest - 1).largest, largest);

  CliRun run =
      RunCli({"plan", "--to", "maxtext", "--summary", "--max-memory", "1KiB", Llama().string()});
  EXPECT_EQ(run.exit_code, 1) << Show(run);
  EXPECT_TRUE(Contains(run.err, "is smaller than the largest slice")) << run.err;
  EXPECT_TRUE(Contains(run.err, "is the least that holds")) << run.err;
  run = RunCli({"plan", "--to", "maxtext", "--summary", "--max-memory", "1GiB", Llama().string()});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
  EXPECT_TRUE(Contains(run.out, "within a budget of 1.00 GiB")) << run.out;
}

TEST(PlanTest, DiskRefusalNamesSaveDtypeWhenItFits) {
  check::PlanEstimate e;
  e.write_bytes = 1000;
  e.disk_bytes = 1100;
  check::DiskFit fit = check::FitDisk(e, 500, 2000);
  EXPECT_TRUE(fit.fits);
  fit = check::FitDisk(e, 500, 700);  // float32 output; bfloat16 would need 600
  EXPECT_FALSE(fit.fits);
  EXPECT_TRUE(fit.bf16_fits);
  EXPECT_EQ(fit.bf16_bytes, 600u);
  fit = check::FitDisk(e, 500, 100);
  EXPECT_FALSE(fit.bf16_fits);
  EXPECT_EQ(fit.shortfall, 1000u);
  fit = check::FitDisk(e, 1000, 700);  // already bfloat16: nothing to gain
  EXPECT_FALSE(fit.bf16_fits);
}

TEST(PlanTest, DestinationChecks) {
  TempDir tmp;
  CliRun run = RunCli({"plan", "--to", "maxtext", "--summary", "--save-dtype", "float32",
                       Llama().string(), (tmp.path() / "new" / "out").string()});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
  EXPECT_TRUE(Contains(run.out, "free:   ")) << run.out;
  EXPECT_TRUE(Contains(run.out, "write:  417 KiB")) << run.out;  // float32: twice the bytes
  run = RunCli({"plan", "--to", "maxtext", "--summary", Llama().string(), tmp.path().string()});
  EXPECT_EQ(run.exit_code, 1) << Show(run);
  EXPECT_TRUE(Contains(run.err, "without --overwrite")) << run.err;
  run = RunCli({"plan", "--to", "maxtext", "--summary", "--overwrite", Llama().string(),
                tmp.path().string()});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
}

TEST(PlanTest, BadInput) {
  const std::string llama = Llama().string();
  CliRun run = RunCli({"plan", llama});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "--to maxtext or --to hf is required")) << run.err;
  run = RunCli({"plan", "--to", "gguf", llama});
  EXPECT_EQ(run.exit_code, 2);
  run = RunCli({"plan", "--to", "maxtext", llama, "a", "b"});
  EXPECT_EQ(run.exit_code, 2);
  run = RunCli({"plan", "--to", "maxtext", "--max-memory", "lots", llama});
  EXPECT_EQ(run.exit_code, 2);
  run = RunCli({"plan", "--to", "maxtext", "/nonexistent/model"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "no such file or directory")) << run.err;
  run = RunCli({"plan", "--to", "hf", llama});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "is not an Orbax checkpoint")) << run.err;
  // Index files without their shards: the plan needs the shard headers.
  run = RunCli(
      {"plan", "--to", "maxtext", (testing::FixtureDir() / "hf-index" / "mixtral-8x22b").string()});
  EXPECT_EQ(run.exit_code, 2) << Show(run);
  EXPECT_TRUE(Contains(run.err, "model-00001-of-00059.safetensors")) << run.err;
  run = RunCli({"plan", "--to", "maxtext",
                (testing::FixtureDir() / "hf" / "transformers-tiny_gpt2").string()});
  EXPECT_EQ(run.exit_code, 2) << Show(run);
  EXPECT_TRUE(Contains(run.err, "which no plugin converts")) << run.err;
}

TEST(ConvertVerifyTest, ConvertVerifyReportsAfterWriting) {
  TempDir tmp;
  const fs::path mt = tmp.path() / "mt", hf = tmp.path() / "hf";
  CliRun run =
      RunCli({"convert", "-q", "--verify", "--to", "maxtext", Llama().string(), mt.string()});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
  EXPECT_TRUE(Contains(run.out, "verify: OK")) << run.out;
  run = RunCli({"convert", "-q", "--verify", "--to", "hf", mt.string(), hf.string()});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
  EXPECT_TRUE(Contains(run.out, "12 bit-exact")) << run.out;
}

}  // namespace
}  // namespace ckptbridge
