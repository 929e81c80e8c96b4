// The executor's memory budget: units wait for their share, never hold more
// than the budget together, and a unit larger than the budget runs alone.
#include "host/engine/execute.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace ckptbridge::engine {
namespace {

// Runs `needs.size()` units on 4 threads under `budget` bytes; each unit
// "holds" its need for a moment. Returns the most held at once.
uint64_t MostHeldAtOnce(const std::vector<uint64_t>& needs, uint64_t budget,
                        std::vector<size_t>* run_alone = nullptr) {
  std::atomic<uint64_t> held{0}, most{0};
  std::atomic<int> running{0};
  std::vector<int> concurrency(needs.size(), 0);
  ExecuteOptions options;
  options.threads = 4;
  options.max_memory = budget;
  const Status status = ForEachUnit(
      needs.size(), options, [](size_t) { return uint64_t{1}; },
      [&](size_t i) {
        const int now = running.fetch_add(1) + 1;
        const uint64_t total = held.fetch_add(needs[i]) + needs[i];
        uint64_t seen = most.load();
        while (total > seen && !most.compare_exchange_weak(seen, total)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        concurrency[i] = std::max(now, running.load());
        held.fetch_sub(needs[i]);
        running.fetch_sub(1);
        return Status::Ok();
      },
      [&](size_t i) { return needs[i]; });
  EXPECT_TRUE(status.ok()) << status.message();
  if (run_alone) {
    for (size_t i = 0; i < needs.size(); ++i) {
      if (concurrency[i] == 1) run_alone->push_back(i);
    }
  }
  return most.load();
}

TEST(MemoryBudgetTest, UnitsInFlightStayWithinTheBudget) {
  // Two units of 60 do not fit in 100: with two or more cores they would
  // otherwise overlap.
  const std::vector<uint64_t> needs(40, 60);
  EXPECT_EQ(MostHeldAtOnce(needs, 100), 60u);
}

TEST(MemoryBudgetTest, AUnitLargerThanTheBudgetRunsAlone) {
  std::vector<uint64_t> needs(20, 10);
  needs[7] = 500;
  std::vector<size_t> alone;
  MostHeldAtOnce(needs, 100, &alone);
  EXPECT_NE(std::find(alone.begin(), alone.end(), 7u), alone.end());
}

TEST(MemoryBudgetTest, AcquireTakesAtMostTheCapacityAndTracksThePeak) {
  MemoryBudget budget(64);
  EXPECT_EQ(budget.Acquire(200), 64u);
  budget.Release(64);
  const uint64_t a = budget.Acquire(20), b = budget.Acquire(30);
  EXPECT_EQ(a + b, 50u);
  EXPECT_EQ(budget.peak(), 64u);
  budget.Release(a);
  budget.Release(b);
  EXPECT_GE(DefaultMaxMemory(), uint64_t{256} << 20);
}

TEST(MemoryBudgetTest, UnitsGetAnEighthOfTheBudgetBetweenAFloorAndACeiling) {
  EXPECT_EQ(UnitMemoryLimit(uint64_t{256} << 20), uint64_t{32} << 20);
  EXPECT_EQ(kMaxUnitMemory, uint64_t{64} << 20);
  EXPECT_EQ(UnitMemoryLimit(uint64_t{512} << 20), kMaxUnitMemory);
  EXPECT_EQ(UnitMemoryLimit(uint64_t{1} << 30), kMaxUnitMemory);
  EXPECT_EQ(UnitMemoryLimit(uint64_t{64} << 30), kMaxUnitMemory);
  EXPECT_EQ(UnitMemoryLimit(0), uint64_t{64} << 10);
}

TEST(MemoryBudgetTest, UnitsReuseTheScratchBuffersOfUnitsBeforeThem) {
  // One thread, so units run one after another: each one's buffer is the
  // memory the one before it let go, not a fresh allocation. Without a
  // budget there is nothing to keep them in.
  for (const uint64_t max_memory : {uint64_t{64} << 20, uint64_t{0}}) {
    ExecuteOptions options;
    options.threads = 1;
    options.max_memory = max_memory;
    std::vector<const char*> seen;
    const Status status = ForEachUnit(
        4, options, [](size_t) { return uint64_t{1}; },
        [&](size_t) {
          ScratchBuffer buffer(size_t{2} << 20);
          buffer.data()[0] = 1;
          seen.push_back(buffer.data());
          return Status::Ok();
        },
        [](size_t) { return uint64_t{4} << 20; });
    ASSERT_TRUE(status.ok()) << status.message();
    ASSERT_EQ(seen.size(), 4u);
    if (max_memory > 0) {
      EXPECT_EQ(std::count(seen.begin(), seen.end(), seen[0]), 4) << "reused";
    }
    EXPECT_EQ(BudgetScope::Current(), nullptr);  // the scope ends with the unit
  }
}

}  // namespace
}  // namespace ckptbridge::engine
