// kd::train::TrainState: what a training step carries from one step to the next, and what a
// checkpoint saves: the step, the model's parameters and buffers, the optimizer's state.
//
//   auto model = torch::nn::Linear(4, 2);
//   torch::optim::Adam adam(model->parameters());
//   auto state = TrainState::from_module(*model, &adam);
//   state.params.get("weight").tensor();   // the module's own tensor (shared storage)
#pragma once

#include "trainer/common/torch_fwd.h"

#include <cstdint>

#include "trainer/tree/tree.h"

namespace kd::train {

struct TrainState {
  int64_t step = 0;
  Tree params;       // named parameters, nested by module path ("encoder.0.weight")
  Tree collections;  // named buffers (e.g. BatchNorm running statistics), nested the same way
  Tree opt_state;    // per-parameter optimizer state, nested like params (see optim/)

  // Trees of `module`'s named parameters and buffers, sharing their storage, and of the
  // optimizer's state when one is given.
  static TrainState from_module(const torch::nn::Module& module, const torch::optim::Optimizer* optimizer = nullptr,
                                int64_t step = 0);
};

}  // namespace kd::train
