// kd::train::ProgressConsole: the console of `kd train` on a terminal. It is the logger's
// console sink (log lines go to stderr as usual) and draws a one-line progress bar below them:
// every log line first clears the bar, so warnings and metric lines never print into it.
//
//   auto console = std::make_shared<ProgressConsole>(/*bar=*/isatty(STDERR_FILENO));
//   logger.sinks().push_back(console);
//   console->update(step, num_train_steps, steps_this_run, seconds_this_run, loss);  // every step
//
// update() redraws at most ten times a second and costs one clock read otherwise; the rate is
// that of the steps this process ran (a resumed run does not count the steps before it), and
// the line is cut to the terminal's width. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include <spdlog/sinks/base_sink.h>

namespace kd::train {

// "H:MM:SS".
std::string format_duration(double seconds);

class ProgressConsole final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit ProgressConsole(bool bar) : bar_(bar) {}

  // Step `step` of `total` done; `steps` steps took `seconds` in this process. `loss` is the
  // latest logged losses/total, if any.
  void update(int64_t step, int64_t total, int64_t steps, double seconds, std::optional<double> loss);
  // Removes the bar (e.g. at the end of training).
  void clear();

  // The bar's text, as drawn at `columns` wide (exposed for tests).
  static std::string format_bar(int64_t step, int64_t total, double steps_per_second, std::optional<double> loss,
                                int columns);

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override;

 private:
  void erase_locked();

  const bool bar_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace kd::train
