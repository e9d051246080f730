// The clock kd measures durations with (steps, evals, checkpoints, waits).
#pragma once

#include <chrono>

namespace kd {

using Clock = std::chrono::steady_clock;

// Seconds from `start` to now.
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace kd
