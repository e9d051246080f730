// Forward declarations of the LibTorch classes kd's public headers name by reference only,
// so those headers need not include <torch/torch.h>.
#pragma once

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace torch::optim {
class Optimizer;
}  // namespace torch::optim
