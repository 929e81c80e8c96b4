// host/cli/progress.h - a live progress line for long conversions.
//
// On a terminal, one line on stderr redrawn a few times a second:
//   converting  120/288 slices  1.21/2.60 GiB  46%  812.3 MiB/s  ETA 0:02  RSS 640 MiB
// When stderr is not a terminal (logs, CI), a plain line every 10 seconds.
// Stop() erases the live line so the summary prints cleanly.
#ifndef CKPTBRIDGE_HOST_CLI_PROGRESS_H_
#define CKPTBRIDGE_HOST_CLI_PROGRESS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "host/engine/execute.h"

namespace ckptbridge::cli {

class ProgressLine {
 public:
  // Does nothing when `enabled` is false (--quiet).
  ProgressLine(const engine::Progress& progress, bool enabled);
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void Start();
  void Stop();

 private:
  void Run();
  void Draw(bool final_line);

  const engine::Progress& progress_;
  const bool enabled_;
  const bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  size_t last_width_ = 0;
};

}  // namespace ckptbridge::cli

#endif  // CKPTBRIDGE_HOST_CLI_PROGRESS_H_
