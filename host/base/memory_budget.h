// host/base/memory_budget.h - the bytes a run may hold at once, and the
// working buffers it keeps, within them, for the next unit of work.
//
// A conversion streams units (slices of tensors) through a few threads. Each
// unit takes its estimated working set from a MemoryBudget before it starts
// and gives it back when it ends (engine/execute.h). The large buffers a unit
// works in - a transposed slice, an encoded chunk, a decoded chunk - are
// ScratchBuffers: when a unit is done with one, the budget keeps it for the
// next unit instead of freeing it. Memory new from the kernel is zeroed page
// by page on first touch; allocating and freeing these buffers per unit made
// that zeroing (clear_page_erms) 15% of a conversion's CPU time on the
// 2-core reference machine.
//
// Kept buffers count against the budget like units in flight do: a buffer is
// kept only while there is room for it, and a unit that needs the room frees
// kept buffers before it waits. So reuse never makes a run hold more than the
// budget.
//
// A thread finds its budget through a BudgetScope (the executor opens one
// around every unit). Outside any scope a ScratchBuffer is an ordinary
// allocation, freed when it is destroyed.
#ifndef CKPTBRIDGE_HOST_BASE_MEMORY_BUDGET_H_
#define CKPTBRIDGE_HOST_BASE_MEMORY_BUDGET_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace ckptbridge {

// A counting budget of bytes shared by the threads of one run, and the
// buffers kept for reuse within it.
class MemoryBudget {
 public:
  // `max_kept`: how many buffers to keep at most. A unit works in two or
  // three large buffers, so a few per thread cover the units in flight;
  // beyond that, the buffer kept longest ago is freed (sizes change from one
  // tensor to the next, and old sizes should not pile up).
  explicit MemoryBudget(uint64_t capacity, size_t max_kept = 16)
      : capacity_(capacity), max_kept_(max_kept) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Waits until `bytes` are free and takes them, first freeing kept buffers
  // if that makes room. A request larger than the whole budget waits until
  // nothing else is held and takes it all. Returns what was taken (pass it
  // to Release).
  uint64_t Acquire(uint64_t bytes);
  void Release(uint64_t bytes);
  uint64_t capacity() const { return capacity_; }
  // The most that was held at once so far, kept buffers included.
  uint64_t peak() const;

  // Buffers smaller than this are not worth keeping: malloc reuses them
  // from its own free lists.
  static constexpr size_t kMinKeptBytes = size_t{1} << 20;

  // A kept buffer of at least `size` bytes and at most a quarter more (so
  // that a unit does not hold much more than it asked the budget for), or an
  // empty string when none fits. Its bytes are unspecified. It leaves the
  // budget: the unit that takes it holds it under its own share.
  std::string TakeKept(size_t size);
  // Keeps `buffer` for reuse if the budget has room for all of its bytes
  // (and it is at least kMinKeptBytes); otherwise frees it. Keeping more
  // than max_kept buffers frees the one kept longest ago.
  void Keep(std::string buffer);
  // The bytes of the buffers kept now.
  uint64_t kept_bytes() const;

 private:
  struct Kept {
    uint64_t age;  // when it was kept: a count of Keep calls
    std::string buffer;
  };
  const uint64_t capacity_;
  const size_t max_kept_;
  mutable std::mutex mutex_;
  std::condition_variable freed_;
  uint64_t in_use_ = 0;  // taken by units, plus kept_bytes_
  uint64_t peak_ = 0;
  // Takes a kept buffer out of kept_ and the budget (the lock is held).
  std::string Unkeep(std::multimap<size_t, Kept>::iterator kept);
  std::multimap<size_t, Kept> kept_;  // by size
  uint64_t kept_bytes_ = 0;
  uint64_t keeps_ = 0;
};

// While it lives, ScratchBuffers made on this thread take from and go back to
// `budget` (null: plain allocations). Scopes nest; the innermost one counts.
// A buffer that outlives its budget is simply freed.
class BudgetScope {
 public:
  explicit BudgetScope(std::shared_ptr<MemoryBudget> budget);
  ~BudgetScope();
  BudgetScope(const BudgetScope&) = delete;
  BudgetScope& operator=(const BudgetScope&) = delete;

  // The budget of the innermost scope open on this thread, or null.
  static const std::shared_ptr<MemoryBudget>& Current();

 private:
  std::shared_ptr<MemoryBudget> previous_;
};

// A byte buffer for one unit's working data, reused across units through the
// budget of the BudgetScope it was first sized in (see the top of this file).
// Unlike std::string, growing it does not zero the new bytes: they are
// unspecified, and the caller writes every byte it reads back.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  explicit ScratchBuffer(size_t size) { Resize(size); }
  ~ScratchBuffer();
  ScratchBuffer(ScratchBuffer&& other) noexcept;
  ScratchBuffer& operator=(ScratchBuffer&& other) noexcept;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // Makes the buffer `size` bytes long. The first min(size, size()) bytes
  // are kept; the rest are unspecified.
  void Resize(size_t size);
  // Appends `bytes` after the first size() bytes.
  void Append(std::string_view bytes);
  char* data() { return storage_.data(); }
  const char* data() const { return storage_.data(); }
  size_t size() const { return size_; }
  std::string_view view() const { return std::string_view(storage_.data(), size_); }
  void swap(ScratchBuffer& other) noexcept;

 private:
  // At least size_ bytes long. Its length is the most this buffer ever held,
  // so that shrinking and growing again within it never zeroes anything.
  std::string storage_;
  size_t size_ = 0;
  std::weak_ptr<MemoryBudget> budget_;  // where storage_ came from and goes back to
};

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_MEMORY_BUDGET_H_
