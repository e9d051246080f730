// kd::train::StopSignals: SIGINT and SIGTERM (and the run's requeue_signal) while a run trains. The first signal asks
// the loop to finish its step, save a checkpoint and return; a second one, a second or more later, exits at once (one
// within the second is the same request arriving twice, e.g. a scheduler signalling every process of a job while `kd
// launch` passes it on too).
//
//   StopSignals signals;                       // installs the handlers, for this scope
//   while (... && !signals.received()) step();
#pragma once

#include <memory>

namespace kd::train {

class StopSignals {
 public:
  // `also`: one more signal that asks to stop (0: none), e.g. SIGUSR1.
  explicit StopSignals(int also = 0);
  // Restores the previous handlers, except while an error propagates: then a signal (e.g. a
  // launcher stopping the other ranks after a failure) must not kill the process before the
  // error is reported, so the handler stays and only a second signal exits.
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first signal received since construction (0: none).
  int received() const { return pending(); }
  // The same, read by code that holds no StopSignals (async-signal-safe to write, cheap to read).
  static int pending();

 private:
  struct Saved;
  std::unique_ptr<Saved> saved_;
};

}  // namespace kd::train
