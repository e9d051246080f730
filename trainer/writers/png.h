// PNG encoding for image summaries (libpng), and decoding for tests and tools.
#pragma once

#include <string>

#include <torch/types.h>

namespace kd::writers {

// `image`: uint8 [H, W, C] with C 1 (gray), 3 (RGB) or 4 (RGBA). Throws kd::TypeError.
std::string encode_png(const torch::Tensor& image);
// The uint8 [H, W, C] image of PNG bytes. Throws kd::CorruptionError.
torch::Tensor decode_png(const std::string& bytes);

}  // namespace kd::writers
