// kd::summaries::Summary: a metric whose value is shown rather than plotted: an image grid, a
// histogram or texts. Writers (TensorBoard) read `kind()` to know how to record `compute()`:
//   kImages:    uint8 tensor [H, W, C] (a grid of the first images)
//   kHistogram: {"counts": float64 [B], "edges": float64 [B + 1]}
//   kTexts:     a list of string leaves
#pragma once

#include "trainer/metrics/metric.h"

namespace kd::summaries {

class Summary : public metrics::Metric {
 public:
  enum class Kind { kImages, kHistogram, kTexts };
  virtual Kind kind() const = 0;
};

using SummaryPtr = std::shared_ptr<const Summary>;

// ShowImages, ShowDifferenceImages, Histogram, ShowTexts.
config::Registry<Summary>& registry();

}  // namespace kd::summaries
