// EarlyStopping: stops training when an eval's metric stops improving (Keras's and Lightning's
// EarlyStopping), after a checkpoint and the evals of the run's end.
//
//   callbacks:
//     early:
//       type: EarlyStopping
//       metric: test/metrics/accuracy   # <eval name>/<a logged value of that eval>
//       mode: max                       # max | min (default: min for losses/, required otherwise)
//       patience: 3                     # evals without improvement before stopping
//       min_delta: 0.0                  # an improvement is more than this
//
// Its state (the best value and step, the evals since) is in every checkpoint, so a resumed run
// goes on counting, and a run it stopped stays stopped when started again.
#pragma once

#include <cstdint>
#include <string>

#include "trainer/config/node.h"
#include "trainer/run/callback.h"

namespace kd::train {

class EarlyStopping final : public Callback {
 public:
  explicit EarlyStopping(const config::Node& options);

  void on_train_start(Trainer& trainer) override;
  void on_eval_end(Trainer& trainer, const std::string& eval_name, int64_t step,
                   const writers::Scalars& values) override;
  Tree state() const override;
  void restore(const Tree& state) override;

  // Whether `value` improves on the best so far (always true for the first).
  bool improves(double value) const;

 private:
  std::string metric_;      // "<eval name>/<logged value>"
  std::string where_;       // of `metric`, for errors
  std::string eval_;        // the eval's name
  std::string value_name_;  // the logged value's name ("metrics/accuracy")
  bool maximize_ = true;
  int64_t patience_ = 0;
  double min_delta_ = 0;

  bool has_best_ = false;
  double best_ = 0;
  int64_t best_step_ = -1;
  int64_t evals_without_improvement_ = 0;
  bool stopped_ = false;
};

}  // namespace kd::train
