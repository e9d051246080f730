// The states of a step's auxiliaries (losses, metrics, summaries), as returned by
// Context::get_aux_state and accumulated over a logging interval or an eval set.
#pragma once

#include "trainer/tree/tree.h"

namespace kd::train {

struct AuxiliariesState {
  Tree loss_states;     // loss name -> loss state
  Tree metric_states;   // metric name -> metric state
  Tree summary_states;  // summary name -> summary state
};

}  // namespace kd::train
