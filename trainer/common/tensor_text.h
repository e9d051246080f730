// Tensors described in kd's messages: "float32[2, 3]".
#pragma once

#include <string>

#include <torch/types.h>

namespace kd {

// "float32", "int64", "uint8", ...; LibTorch's own name for the rarer types.
const char* dtype_name(torch::ScalarType type);

// "float32[2, 3]" for a tensor (with the device when not the CPU); "undefined tensor".
std::string describe_tensor(const torch::Tensor& tensor);

}  // namespace kd
