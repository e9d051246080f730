// params_tree and buffers_tree (tree.h): a module's named tensors as trees.
#include <torch/nn/module.h>

#include "trainer/tree/tree.h"

namespace kd {
namespace {

Tree nested(const torch::OrderedDict<std::string, torch::Tensor>& named) {
  Tree out = Tree::dict();
  for (const auto& item : named) out = out.set(Path::from_dotted(item.key()), item.value());
  return out;
}

}  // namespace

Tree params_tree(const torch::nn::Module& module) { return nested(module.named_parameters(/*recurse=*/true)); }

Tree buffers_tree(const torch::nn::Module& module) { return nested(module.named_buffers(/*recurse=*/true)); }

}  // namespace kd
