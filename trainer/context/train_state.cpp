#include "trainer/context/train_state.h"

#include <torch/nn/module.h>

#include "trainer/optim/optimizer_state.h"

namespace kd::train {

TrainState TrainState::from_module(const torch::nn::Module& module, const torch::optim::Optimizer* optimizer,
                                   int64_t step) {
  TrainState state;
  state.step = step;
  state.params = params_tree(module);
  state.collections = buffers_tree(module);
  state.opt_state = optimizer ? optim::optimizer_state_tree(*optimizer, module) : Tree::dict();
  return state;
}

}  // namespace kd::train
