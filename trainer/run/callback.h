// kd::train::Callback: user code that runs at points of the training loop. Callbacks are
// registered and configured like any component:
//
//   kd::train::callback_registry().add<PrintLoss>("PrintLoss");  // PrintLoss(const config::Node&)
//   # YAML:  callbacks: {print: {type: PrintLoss, every: 100}}
//
// In a data-parallel job callbacks run on every rank, with the same (global) losses and
// metrics (perf_stats are each rank's own); `trainer.is_chief()` tells rank 0, the one that
// should write files. on_checkpoint runs on rank 0 only, which alone saves.
//
// A callback stops the run with trainer.request_stop(reason): after the current step, with a
// checkpoint and the evals that run at the end. Its state() is saved in every checkpoint (under
// its name in `callbacks`) and given back to restore() when the run resumes.
//
// Built in: EarlyStopping (early_stopping.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "trainer/config/registry.h"
#include "trainer/tree/tree.h"
#include "trainer/writers/writer.h"

namespace kd::train {

class Trainer;

class Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_start(Trainer& trainer) {}
  // After every step; `logged` holds the values when this step was a logging step.
  virtual void on_step_end(Trainer& trainer, int64_t step, const writers::Scalars* logged) {}
  virtual void on_eval_end(Trainer& trainer, const std::string& eval_name, int64_t step,
                           const writers::Scalars& values) {}
  virtual void on_checkpoint(Trainer& trainer, int64_t step, const std::string& path) {}
  virtual void on_train_end(Trainer& trainer, int64_t step) {}

  // What a resumed run needs (ints, floats, strings, tensors in a Tree); none: nothing.
  virtual Tree state() const { return Tree(); }
  virtual void restore(const Tree& state) {}
};

using CallbackPtr = std::shared_ptr<Callback>;

config::Registry<Callback>& callback_registry();

}  // namespace kd::train
