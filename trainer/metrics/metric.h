// kd::metrics::Metric: reads the context by path keys (see train::Auxiliary), returns a per-step
// state (a tree of tensors), merges states across steps or eval batches, and computes the value
// to log. Subclasses usually derive from AverageMetric or CollectingMetric and only write
// `get_state`.
#pragma once

#include <memory>

#include "trainer/config/registry.h"
#include "trainer/context/auxiliary.h"
#include "trainer/metrics/states.h"

namespace kd::metrics {

class Metric : public train::Auxiliary {
 public:
  // The state of this metric for one step (or one eval batch).
  virtual Tree get_state(const train::Context& ctx) const = 0;
  // Exact, associative merge; either side may be none (the empty state).
  virtual Tree merge(const Tree& a, const Tree& b) const = 0;
  // The value to log: a scalar tensor, or a tree of them (logged as "name/sub.path").
  virtual Tree compute(const Tree& state) const = 0;
};

using MetricPtr = std::shared_ptr<const Metric>;

// State {total, count}; compute = total / count.
class AverageMetric : public Metric {
 public:
  Tree merge(const Tree& a, const Tree& b) const override { return AverageState::merge(a, b); }
  Tree compute(const Tree& state) const override { return AverageState::compute(state); }
};

// State: tensors concatenated over batches; subclasses compute from all of them.
class CollectingMetric : public Metric {
 public:
  Tree merge(const Tree& a, const Tree& b) const override { return CollectingState::merge(a, b); }
};

// Accuracy, BinaryAccuracy, Precision1, RocAuc, Norm, Std, SingleDimension, Psnr, Ssim,
// TreeMap, TreeReduce, SkipIfMissing.
config::Registry<Metric>& registry();

}  // namespace kd::metrics
