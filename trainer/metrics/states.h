// The states metrics accumulate, as trees of tensors (so they can be read by path, reduced
// across processes and checkpointed). Merging is exact and associative: merging the states of
// the batches of a dataset in any grouping equals the state of the whole dataset.
// A none tree is the empty state: merge(none, s) == s.
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "trainer/tree/tree.h"

namespace kd::metrics {

// {total, count}; compute() = total / count (float64 for integer totals). Tensors keep their shape (per-class
// averages). A count known without the data (examples, steps) is an int leaf, so merging it
// allocates nothing; one that depends on the data (a mask's sum) is a tensor.
// A state may also be {mean, count}: the same as {total: mean * count, count}, kept that way so
// that making it costs no tensor operation (a loss's mean over a batch, once per step); merging
// turns it into a total with one fused multiply-add.
struct AverageState {
  static Tree make(const torch::Tensor& total, const torch::Tensor& count);
  static Tree make(const torch::Tensor& total, int64_t count);
  static Tree make(const torch::Tensor& total, Tree count);  // count: an int or a tensor
  static Tree make_mean(const torch::Tensor& mean, int64_t count);
  static Tree merge(const Tree& a, const Tree& b);
  static torch::Tensor compute(const Tree& state);
  // total (mean * count for a mean state).
  static torch::Tensor total(const Tree& state);
};

// Every leaf concatenated along dimension 0 over all merged batches (e.g. scores and labels for
// RocAuc). compute() is the collected tree itself.
struct CollectingState {
  static Tree merge(const Tree& a, const Tree& b);
};

// Like CollectingState, but keeps only the first `num` rows (e.g. images to show).
struct CollectFirstState {
  static Tree merge(const Tree& a, const Tree& b, int64_t num);
};

}  // namespace kd::metrics
