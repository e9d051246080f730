#include "trainer/run/progress_internal.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace kd::train {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
}

namespace {

int terminal_columns() {
  winsize w{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 0) return w.ws_col;
  return 80;
}

}  // namespace

std::string ProgressConsole::format_bar(int64_t step, int64_t total, double steps_per_second,
                                        std::optional<double> loss, int columns) {
  constexpr int64_t kWidth = 30;
  const int64_t filled = total > 0 ? std::min<int64_t>(kWidth, kWidth * step / total) : 0;
  std::string bar(static_cast<std::size_t>(filled), '=');
  if (filled < kWidth) bar += '>' + std::string(static_cast<std::size_t>(kWidth - filled - 1), ' ');
  std::string line = fmt::format("[{}] {}/{}  {:.1f} steps/s", bar, step, total, steps_per_second);
  if (steps_per_second > 0) line += "  ETA " + format_duration(static_cast<double>(total - step) / steps_per_second);
  if (loss) line += fmt::format("  losses/total {:.4g}", *loss);
  // One column is left free: writing the last one makes some terminals wrap.
  if (columns > 1 && static_cast<int>(line.size()) > columns - 1) line.resize(static_cast<std::size_t>(columns - 1));
  return line;
}

void ProgressConsole::update(int64_t step, int64_t total, int64_t steps, double seconds, std::optional<double> loss) {
  if (!bar_) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mutex_);  // uncontended: tens of nanoseconds per step
  if (now - last_draw_ < std::chrono::milliseconds(100) && step < total) return;
  last_draw_ = now;
  const double rate = seconds > 0 ? static_cast<double>(steps) / seconds : 0.0;
  const std::string line = format_bar(step, total, rate, loss, terminal_columns());
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  shown_ = true;
}

void ProgressConsole::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  erase_locked();
  std::fflush(stderr);
}

void ProgressConsole::erase_locked() {
  if (!shown_) return;
  std::fputs("\r\033[K", stderr);
  shown_ = false;
  last_draw_ = {};  // redraw after the next step, below the new line
}

void ProgressConsole::sink_it_(const spdlog::details::log_msg& msg) {
  erase_locked();
  spdlog::memory_buf_t formatted;
  formatter_->format(msg, formatted);
  std::fwrite(formatted.data(), 1, formatted.size(), stderr);
  std::fflush(stderr);
}

void ProgressConsole::flush_() { std::fflush(stderr); }

}  // namespace kd::train
