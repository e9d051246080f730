// The state of a torch::optim optimizer as a kd::Tree laid out like the params tree:
//   opt_state.encoder.0.weight.exp_avg     (Adam, AdamW)
//   opt_state.encoder.0.weight.momentum_buffer   (SGD with momentum)
// Leaves share storage with the optimizer's own buffers.
#pragma once

#include "trainer/common/torch_fwd.h"

#include "trainer/tree/tree.h"

namespace kd::optim {

// One entry per parameter of `module` that has optimizer state (none before the first step).
// Supports SGD, Adam, AdamW, RMSprop and Adagrad; others raise kd::NotSupportedError.
Tree optimizer_state_tree(const torch::optim::Optimizer& optimizer, const torch::nn::Module& module);

// Replaces the optimizer's state by `state` (as optimizer_state_tree gives it; e.g. from a
// checkpoint). Every entry must name a parameter of `module` and hold the fields of this
// optimizer's type with the parameter's shape and dtype: kd::CorruptionError otherwise, and then
// the optimizer's state is left empty. The values are copied (never aliased): into the tensors
// of the state being replaced where they fit (no allocation), else into new ones. With `adopt`,
// `state`'s tensors are the caller's to give away: one on its parameter's device is kept as it is.
void load_optimizer_state(torch::optim::Optimizer& optimizer, const torch::nn::Module& module, const Tree& state,
                          bool adopt = false);

}  // namespace kd::optim
