// Exporting a checkpoint's tensors for other tools (kd export): as safetensors
// (safetensors.h), or as a file Python's `torch.load` reads as a dict of name -> tensor
// (LibTorch's pickle). Names are the Context's paths ("params.layers.0.weight"). Files are
// written atomically, and an existing file is replaced only when asked.
#pragma once

#include <string>

#include "trainer/checkpoints/safetensors.h"

namespace kd::checkpoints {

// The bytes of a torch.load-able file holding a dict of the tensors.
std::string torch_pickle_bytes(const NamedTensors& tensors);

// Writes `bytes` to `path` through a temporary file; throws kd::IOError, or kd::ConfigError
// when `path` exists.
void write_new_file(const std::string& path, const std::string& bytes);

}  // namespace kd::checkpoints
