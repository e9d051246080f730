// init_transform: initialise a model from another run's checkpoint before training.
//
//   init_transform:
//     checkpoint: workdirs/pretrain       # a workdir (its newest valid checkpoint) or a ckpt_<step> dir
//     step: 4000                          # optional, with a workdir
//     select: ["params.**"]               # what to load (default params.**; add "collections.**")
//     rename: {"params.encoder.**": "params.backbone.**"}   # target <- source, by path prefix
//     opt_state: false                    # also load the optimizer state (same parameter names)
//     use_ema: false                      # load the EMA of the params (optimizer.ema_decay) as the params
//     strict: true                        # every selected model tensor must be loaded, and
//                                         # every selected checkpoint tensor used
//
// Or from weights published outside kd: a safetensors file (Hugging Face's and timm's format, what
// safetensors.torch.save_file(model.state_dict(), f) writes), its tensors named as PyTorch names
// a module's parameters and buffers (kd's params./collections. paths without that prefix):
//
//   init_transform:
//     weights: resnet18.safetensors
//     rename: {"^fc\\.": "head."}           # regular expressions on the file's names, in order
//     select: ["params.**", "collections.**"]  # the model's tensors to load (the default)
//     strict: true
//
// Nothing but tensors is read from the file (never a pickle: no code of the file's runs).
// Missing, unexpected and shape-mismatched keys are reported together; with strict: false
// they are only reported.
#pragma once

#include "trainer/common/torch_fwd.h"

#include <string>
#include <utility>
#include <vector>

namespace kd::config {
class Node;
}

namespace kd::checkpoints {

// Applies the transform; returns a one-line report ("loaded 6 tensors from ..."). Throws
// kd::ConfigError (strict mismatch, bad options) or kd::CorruptionError. `tied`: {other name,
// the model's name} of tensors a PyTorch module holds under two names (models::Model::tied_weights);
// a weights file may hold either, or both when they are equal.
std::string apply_init_transform(const config::Node& options, torch::nn::Module& model,
                                 torch::optim::Optimizer* optimizer,
                                 const std::vector<std::pair<std::string, std::string>>& tied = {});

}  // namespace kd::checkpoints
