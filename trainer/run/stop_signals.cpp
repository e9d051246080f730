#include "trainer/run/stop_signals_internal.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <exception>

namespace kd::train {
namespace {

volatile sig_atomic_t g_stop_signal = 0;
// CLOCK_MONOTONIC nanoseconds of the first signal. A lock-free atomic is async-signal-safe.
std::atomic<int64_t> g_stop_time_ns{0};
static_assert(std::atomic<int64_t>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  const int64_t ns = static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
  if (g_stop_signal != 0) {
    if (ns - g_stop_time_ns.load() >= 1'000'000'000) _exit(128 + sig);
    return;
  }
  g_stop_time_ns.store(ns);
  g_stop_signal = sig;
}

}  // namespace

struct StopSignals::Saved {
  struct sigaction old_int {
  }, old_term{}, old_also{};
  int also = 0;
};

StopSignals::StopSignals(int also) : saved_(std::make_unique<Saved>()) {
  g_stop_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &saved_->old_int);
  sigaction(SIGTERM, &action, &saved_->old_term);
  if (also != 0 && also != SIGINT && also != SIGTERM) {
    saved_->also = also;
    sigaction(also, &action, &saved_->old_also);
  }
}

StopSignals::~StopSignals() {
  if (std::uncaught_exceptions() == 0) {
    sigaction(SIGINT, &saved_->old_int, nullptr);
    sigaction(SIGTERM, &saved_->old_term, nullptr);
    if (saved_->also != 0) sigaction(saved_->also, &saved_->old_also, nullptr);
  }
}

int StopSignals::pending() { return g_stop_signal; }

}  // namespace kd::train
