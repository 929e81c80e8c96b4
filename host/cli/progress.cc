#include "host/cli/progress.h"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "host/cli/format.h"

namespace ckptbridge::cli {

ProgressLine::ProgressLine(const engine::Progress& progress, bool enabled)
    : progress_(progress), enabled_(enabled), tty_(::isatty(STDERR_FILENO)) {}

ProgressLine::~ProgressLine() { Stop(); }

void ProgressLine::Start() {
  if (!enabled_ || thread_.joinable()) return;
  start_ = std::chrono::steady_clock::now();
  thread_ = std::thread([this] { Run(); });
}

void ProgressLine::Stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  if (tty_ && last_width_ > 0) {
    std::fprintf(stderr, "\r%*s\r", static_cast<int>(last_width_), "");
    std::fflush(stderr);
  }
}

void ProgressLine::Run() {
  const auto period = tty_ ? std::chrono::milliseconds(250) : std::chrono::seconds(10);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!wake_.wait_for(lock, period, [this] { return stop_; })) Draw(false);
}

void ProgressLine::Draw(bool /*final_line*/) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const uint64_t done = progress_.bytes_done.load();
  const uint64_t total = progress_.bytes_total;
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  std::string line = "converting  " + std::to_string(progress_.units_done.load()) + "/" +
                     std::to_string(progress_.units_total) + " slices  " + HumanBytes(done) +
                     " / " + HumanBytes(total);
  if (total > 0) {
    line += "  " +
            std::to_string(
                static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total))) +
            "%";
  }
  line += "  " + HumanBytes(static_cast<uint64_t>(rate)) + "/s";
  if (rate > 0 && total > done) {
    line += "  ETA " + HumanSeconds(static_cast<double>(total - done) / rate);
  }
  line += "  RSS " + HumanBytes(CurrentRssBytes());
  if (tty_) {
    const size_t width = line.size();
    if (width < last_width_) line += std::string(last_width_ - width, ' ');
    last_width_ = width;
    std::fprintf(stderr, "\r%s", line.c_str());
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace ckptbridge::cli
