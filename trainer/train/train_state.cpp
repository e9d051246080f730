#include "trainer/train/train_state.h"

#include <torch/nn/module.h>

#include "trainer/optim/optimizer_state.h"

namespace kd::train {
namespace {

Tree nested(const torch::OrderedDict<std::string, torch::Tensor>& named) {
  Tree out = Tree::dict();
  for (const auto& item : named) out = out.set(Path::from_dotted(item.key()), item.value());
  return out;
}

}  // namespace

Tree params_tree(const torch::nn::Module& module) {
  return nested(module.named_parameters(/*recurse=*/true));
}

Tree buffers_tree(const torch::nn::Module& module) {
  return nested(module.named_buffers(/*recurse=*/true));
}

TrainState TrainState::from_module(const torch::nn::Module& module,
                                   const torch::optim::Optimizer* optimizer, int64_t step) {
  TrainState state;
  state.step = step;
  state.params = params_tree(module);
  state.collections = buffers_tree(module);
  state.opt_state = optimizer ? optim::optimizer_state_tree(*optimizer, module) : Tree::dict();
  return state;
}

}  // namespace kd::train
