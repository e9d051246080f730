// kd::train::AuxiliariesState: the states of a step's losses, metrics and summaries, by name
// (Kauldron's AuxiliariesState). A step returns one (Context::get_aux_state); the states of
// successive steps, eval batches or ranks are merged, and the merged state is computed into the
// values to log, by the auxiliaries that own them (step/auxiliaries.h: merge, compute_scalars,
// compute_summaries).
#pragma once

#include <memory>

#include "trainer/tree/tree.h"

namespace kd::train {

struct Auxiliaries;  // the named losses, metrics and summaries (step/auxiliaries.h)

struct AuxiliariesState {
  Tree loss_states;     // loss name -> AverageState
  Tree metric_states;   // metric name -> the metric's state
  Tree summary_states;  // summary name -> the summary's state
  // The auxiliaries the states belong to (needed to merge and compute metric states).
  std::shared_ptr<const Auxiliaries> auxiliaries;

  bool empty() const { return loss_states.empty() && metric_states.empty() && summary_states.empty(); }

  // The three states as one dict tree {loss_states, metric_states, summary_states} (for
  // checkpoints and exchanges between ranks), and back; missing entries are empty states.
  Tree to_tree() const;
  static AuxiliariesState from_tree(const Tree& tree, std::shared_ptr<const Auxiliaries> auxiliaries);
};

// Which states Context::get_aux_state returns.
struct AuxStateRequest {
  bool return_losses = false;
  bool return_metrics = false;
  bool return_summaries = false;
};

}  // namespace kd::train
