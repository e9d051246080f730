// kd::train::RunState: what a checkpoint keeps of the run itself, beside the model, the
// optimizer, the EMA and the data position: what a resumed run needs to go on as the
// uninterrupted one would. A checkpoint's Snapshot::aux holds exactly to_tree() (and
// Snapshot::aux_steps the interval's steps); the tree's layout is the checkpoint format's.
//
//   RunState s = trainer's state ...;  s.save_to(snapshot);                      // saving
//   RunState s = RunState::from_snapshot(snapshot, path);  // checked; restoring
#pragma once

#include <cstdint>
#include <string>

#include "trainer/tree/tree.h"

namespace kd::checkpoints {
struct Snapshot;
}

namespace kd::train {

struct RunState {
  Tree interval;                // the interval's merged states: {loss_states, metric_states, summary_states}
  int64_t interval_steps = 0;   // the steps merged into them
  Tree rank_rng;                // every rank's random states in a data-parallel job; none alone
  int64_t num_threads = 0;      // what `num_threads: auto` chose; 0 when the experiment set them
  double training_seconds = 0;  // the run's wall time up to the checkpoint, the runs it resumed included
  Tree grad_scaler;             // fp16's loss scaler (GradScaler::state); none otherwise
  Tree callbacks;               // each stateful callback's state, by its key under `callbacks`

  // The tree Snapshot::aux holds: the interval's three entries, then the others that are set.
  Tree to_tree() const;
  // Snapshot::aux and aux_steps.
  void save_to(checkpoints::Snapshot& snapshot) const;
  // Read back, checked: an entry of the wrong kind or out of range is a kd::CorruptionError
  // naming `where` and the entry; an entry a checkpoint of an older kd lacks takes its default.
  static RunState from_tree(const Tree& aux, int64_t aux_steps, const std::string& where);
  static RunState from_snapshot(const checkpoints::Snapshot& snapshot, const std::string& where);
};

}  // namespace kd::train
