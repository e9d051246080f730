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

}  // namespace kd::optim
