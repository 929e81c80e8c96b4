// MemoryBudget's kept buffers and ScratchBuffer: reuse happens, stays inside
// the budget, and gives way to work that needs the room.
#include "host/base/memory_budget.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <thread>

namespace ckptbridge {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(MemoryBudgetTest, AKeptBufferIsHandedBackForASimilarSize) {
  MemoryBudget budget(64 * kMiB);
  std::string buffer(8 * kMiB, 'x');
  const char* memory = buffer.data();
  budget.Keep(std::move(buffer));
  EXPECT_EQ(budget.kept_bytes(), 8 * kMiB);
  // More than a quarter larger than asked for: not handed out.
  EXPECT_TRUE(budget.TakeKept(6 * kMiB).empty());
  // Larger than kept: nothing.
  EXPECT_TRUE(budget.TakeKept(9 * kMiB).empty());
  const std::string again = budget.TakeKept(7 * kMiB);
  EXPECT_EQ(again.data(), memory);
  EXPECT_EQ(again.size(), 8 * kMiB);
  EXPECT_EQ(budget.kept_bytes(), 0u);
}

TEST(MemoryBudgetTest, KeptBuffersCountAgainstTheBudget) {
  MemoryBudget budget(10 * kMiB);
  const uint64_t held = budget.Acquire(4 * kMiB);
  budget.Keep(std::string(4 * kMiB, 'a'));  // 8 of 10 held
  EXPECT_EQ(budget.kept_bytes(), 4 * kMiB);
  budget.Keep(std::string(4 * kMiB, 'b'));  // would be 12: freed instead
  EXPECT_EQ(budget.kept_bytes(), 4 * kMiB);
  EXPECT_EQ(budget.peak(), 8 * kMiB);
  // Too small to be worth keeping.
  budget.Keep(std::string(MemoryBudget::kMinKeptBytes - 1, 'c'));
  EXPECT_EQ(budget.kept_bytes(), 4 * kMiB);
  budget.Release(held);
}

TEST(MemoryBudgetTest, WorkThatNeedsTheRoomFreesKeptBuffersInsteadOfWaiting) {
  MemoryBudget budget(10 * kMiB);
  budget.Keep(std::string(6 * kMiB, 'a'));
  budget.Keep(std::string(3 * kMiB, 'b'));
  // 9 of 10 are kept; a unit of 5 frees the largest (6) and fits.
  const uint64_t held = budget.Acquire(5 * kMiB);
  EXPECT_EQ(held, 5 * kMiB);
  EXPECT_EQ(budget.kept_bytes(), 3 * kMiB);
  // A unit as large as the whole budget frees the rest, once the first is
  // done.
  std::thread other([&] {
    const uint64_t all = budget.Acquire(10 * kMiB);
    EXPECT_EQ(budget.kept_bytes(), 0u);
    budget.Release(all);
  });
  budget.Release(held);
  other.join();
  EXPECT_EQ(budget.peak(), 10 * kMiB);
}

TEST(MemoryBudgetTest, KeepsAtMostMaxKeptBuffersDroppingTheOldest) {
  MemoryBudget budget(64 * kMiB, 2);
  budget.Keep(std::string(2 * kMiB, 'a'));
  budget.Keep(std::string(3 * kMiB, 'b'));
  budget.Keep(std::string(4 * kMiB, 'c'));  // the 2 MiB one, kept first, goes
  EXPECT_EQ(budget.kept_bytes(), 7 * kMiB);
  EXPECT_TRUE(budget.TakeKept(2 * kMiB).empty());
  EXPECT_EQ(budget.TakeKept(3 * kMiB)[0], 'b');
  EXPECT_EQ(budget.TakeKept(4 * kMiB)[0], 'c');
  MemoryBudget none(64 * kMiB, 0);
  none.Keep(std::string(2 * kMiB, 'a'));
  EXPECT_EQ(none.kept_bytes(), 0u);
}

TEST(ScratchBufferTest, ReusesMemoryWithinItsBudgetScope) {
  auto budget = std::make_shared<MemoryBudget>(64 * kMiB);
  BudgetScope scope(budget);
  const char* first = nullptr;
  {
    ScratchBuffer a(4 * kMiB);
    first = a.data();
    std::memset(a.data(), 1, a.size());
  }
  EXPECT_EQ(budget->kept_bytes(), 4 * kMiB);
  ScratchBuffer b(3 * kMiB + kMiB / 2);
  EXPECT_EQ(b.data(), first);  // the same memory, not zeroed again
  EXPECT_EQ(b.size(), 3 * kMiB + kMiB / 2);
  EXPECT_EQ(b.data()[0], 1);
  EXPECT_EQ(budget->kept_bytes(), 0u);
}

TEST(ScratchBufferTest, ResizeKeepsThePrefixAndShrinksWithoutLosingMemory) {
  ScratchBuffer buffer(4);
  std::memcpy(buffer.data(), "abcd", 4);
  buffer.Resize(2);
  EXPECT_EQ(buffer.view(), "ab");
  buffer.Resize(3 * kMiB);
  EXPECT_EQ(std::string_view(buffer.data(), 2), "ab");
  const char* memory = buffer.data();
  buffer.Resize(10);
  buffer.Resize(2 * kMiB);  // within what it held: the same memory
  EXPECT_EQ(buffer.data(), memory);
  EXPECT_EQ(buffer.size(), 2 * kMiB);
}

TEST(ScratchBufferTest, AppendGoesAfterTheCurrentSize) {
  ScratchBuffer buffer;
  buffer.Append("");
  EXPECT_EQ(buffer.size(), 0u);
  buffer.Append("ab");
  buffer.Resize(1);
  buffer.Append("cd");
  EXPECT_EQ(buffer.view(), "acd");
}

TEST(ScratchBufferTest, OutsideAnyScopeOrAfterItsBudgetIsGoneItIsSimplyFreed) {
  ScratchBuffer plain(2 * kMiB);  // no scope: an ordinary allocation
  EXPECT_EQ(plain.size(), 2 * kMiB);
  ScratchBuffer outlives;
  {
    auto budget = std::make_shared<MemoryBudget>(64 * kMiB);
    BudgetScope scope(budget);
    outlives.Resize(2 * kMiB);
    ScratchBuffer moved(std::move(outlives));
    outlives = std::move(moved);
  }
  // The budget is gone; destroying the buffer frees it (ASan would see a
  // use after free otherwise).
  EXPECT_EQ(outlives.size(), 2 * kMiB);
}

TEST(ScratchBufferTest, ScopesNestAndRestore) {
  auto outer = std::make_shared<MemoryBudget>(64 * kMiB);
  auto inner = std::make_shared<MemoryBudget>(64 * kMiB);
  EXPECT_EQ(BudgetScope::Current(), nullptr);
  {
    BudgetScope a(outer);
    {
      BudgetScope b(inner);
      EXPECT_EQ(BudgetScope::Current(), inner);
      ScratchBuffer buffer(2 * kMiB);
    }
    EXPECT_EQ(inner->kept_bytes(), 2 * kMiB);
    EXPECT_EQ(BudgetScope::Current(), outer);
  }
  EXPECT_EQ(BudgetScope::Current(), nullptr);
  EXPECT_EQ(outer->kept_bytes(), 0u);
}

}  // namespace
}  // namespace ckptbridge
