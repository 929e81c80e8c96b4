#include "host/base/memory_budget.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

namespace ckptbridge {

uint64_t MemoryBudget::Acquire(uint64_t bytes) {
  bytes = std::min(bytes, capacity_);
  std::vector<std::string> evicted;  // freed after the lock is let go
  {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      // Kept buffers give way to work, largest first.
      while (in_use_ + bytes > capacity_ && !kept_.empty()) {
        evicted.push_back(Unkeep(std::prev(kept_.end())));
      }
      if (in_use_ + bytes <= capacity_) break;
      freed_.wait(lock);
    }
    in_use_ += bytes;
    peak_ = std::max(peak_, in_use_);
  }
  return bytes;
}

void MemoryBudget::Release(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    in_use_ -= bytes;
  }
  freed_.notify_all();
}

uint64_t MemoryBudget::peak() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_;
}

std::string MemoryBudget::TakeKept(size_t size) {
  std::string buffer;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto fit = kept_.lower_bound(size);
    if (fit == kept_.end() || fit->first - size > size / 4) return buffer;
    buffer = Unkeep(fit);
  }
  freed_.notify_all();  // the room it held may be what a waiting unit needs
  return buffer;
}

void MemoryBudget::Keep(std::string buffer) {
  const size_t size = buffer.size();
  if (size < kMinKeptBytes || max_kept_ == 0) return;
  std::string oldest;  // freed after the lock is let go, like `buffer` when there is no room
  std::lock_guard<std::mutex> lock(mutex_);
  if (in_use_ + size > capacity_) return;
  if (kept_.size() >= max_kept_) {
    oldest = Unkeep(std::min_element(kept_.begin(), kept_.end(), [](const auto& a, const auto& b) {
      return a.second.age < b.second.age;
    }));
  }
  in_use_ += size;
  kept_bytes_ += size;
  peak_ = std::max(peak_, in_use_);
  kept_.emplace(size, Kept{keeps_++, std::move(buffer)});
}

std::string MemoryBudget::Unkeep(std::multimap<size_t, Kept>::iterator kept) {
  in_use_ -= kept->first;
  kept_bytes_ -= kept->first;
  std::string buffer = std::move(kept->second.buffer);
  kept_.erase(kept);
  return buffer;
}

uint64_t MemoryBudget::kept_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kept_bytes_;
}

namespace {
thread_local std::shared_ptr<MemoryBudget> current_budget;
}  // namespace

BudgetScope::BudgetScope(std::shared_ptr<MemoryBudget> budget)
    : previous_(std::exchange(current_budget, std::move(budget))) {}

BudgetScope::~BudgetScope() { current_budget = std::move(previous_); }

const std::shared_ptr<MemoryBudget>& BudgetScope::Current() { return current_budget; }

ScratchBuffer::~ScratchBuffer() {
  if (storage_.empty()) return;
  if (const std::shared_ptr<MemoryBudget> budget = budget_.lock())
    budget->Keep(std::move(storage_));
}

ScratchBuffer::ScratchBuffer(ScratchBuffer&& other) noexcept
    : storage_(std::move(other.storage_)),
      size_(std::exchange(other.size_, 0)),
      budget_(std::move(other.budget_)) {
  other.storage_.clear();
  other.budget_.reset();
}

ScratchBuffer& ScratchBuffer::operator=(ScratchBuffer&& other) noexcept {
  if (this != &other) {
    ScratchBuffer old(std::move(*this));  // goes back to its budget
    swap(other);
  }
  return *this;
}

void ScratchBuffer::Append(std::string_view bytes) {
  const size_t start = size_;
  Resize(start + bytes.size());
  if (!bytes.empty()) std::memcpy(storage_.data() + start, bytes.data(), bytes.size());
}

void ScratchBuffer::swap(ScratchBuffer& other) noexcept {
  storage_.swap(other.storage_);
  std::swap(size_, other.size_);
  std::swap(budget_, other.budget_);
}

void ScratchBuffer::Resize(size_t size) {
  if (size > storage_.size()) {
    if (storage_.empty()) {
      const std::shared_ptr<MemoryBudget>& budget = BudgetScope::Current();
      budget_ = budget;
      if (budget) storage_ = budget->TakeKept(size);
    }
    // New memory, or a buffer outgrown: std::string zeroes what it adds,
    // once; later Resizes within it do not.
    if (size > storage_.size()) storage_.resize(size);
  }
  size_ = size;
}

}  // namespace ckptbridge
