// kd::losses::Loss: the base of every loss. A subclass reads its inputs by path keys and returns
// the per-element loss values; the base applies, in one place for all losses:
//   mask:          optional path key; values are multiplied by it (broadcast to their shape), and
//                  by the loss's own mask where it has one (own_mask)
//   normalize_by:  "mask" (default): sum(values * mask) / sum(mask broadcast to values)
//                  "values": sum(values * mask) / number of values
//   weight:        a number or a schedule of the step (see optim/schedules.h), default 1
// The state is an AverageState weighted by the number of values the loss averages (the mask's
// sum under normalize_by: mask), as Kauldron's: merged over steps, eval batches or ranks it is
// the exact average over all examples, whatever the batch sizes. The step's loss_total is the
// sum of the weighted losses.
#pragma once

#include <memory>
#include <optional>

#include "trainer/config/registry.h"
#include "trainer/context/auxiliary.h"
#include "trainer/metrics/states.h"
#include "trainer/optim/schedules.h"

namespace kd::losses {

class Loss : public train::Auxiliary {
 public:
  explicit Loss(const config::Node& options);

  // Per-element (or per-example) loss values, before mask, normalization and weight.
  virtual torch::Tensor values(const train::Context& ctx) const = 0;

  // A mean and the number of values it is the mean of.
  struct Mean {
    torch::Tensor value;
    int64_t count = 0;
  };
  // The mean of values() when there is no mask; a loss may override it with a fused op
  // (e.g. cross-entropy), which saves memory and time on every step.
  virtual Mean mean_value(const train::Context& ctx) const;

  // The weighted, masked, normalized scalar loss of a step, and what it averages.
  struct Value {
    torch::Tensor loss;
    Tree count;  // the number of values (an int), or the mask's sum (a tensor)
  };
  Value evaluate(const train::Context& ctx) const;
  torch::Tensor value(const train::Context& ctx) const { return evaluate(ctx).loss; }
  // An AverageState of `value.loss` weighted by `value.count`.
  Tree get_state(const Value& value) const;
  Tree merge(const Tree& a, const Tree& b) const { return metrics::AverageState::merge(a, b); }

  double weight(int64_t step) const { return (*weight_)(step); }

  enum class NormalizeBy { kMask, kValues };

 protected:
  // A loss's own mask of the values it counts (e.g. labels equal to ignore_index left out), 1
  // where counted, multiplied into `mask`; undefined (the default) when it has none.
  virtual torch::Tensor own_mask(const train::Context& ctx) const { return {}; }

 private:
  optim::SchedulePtr weight_;
  std::optional<Path> mask_;
  NormalizeBy normalize_by_ = NormalizeBy::kMask;
};

using LossPtr = std::shared_ptr<const Loss>;

// L1, L2, Huber, AbsoluteValue, Value, NegativeCosineSimilarity, SoftmaxCrossEntropy,
// SoftmaxCrossEntropyWithIntLabels, SigmoidBinaryCrossEntropy.
config::Registry<Loss>& registry();

}  // namespace kd::losses
