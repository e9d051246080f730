// PNG encoding (libpng) for TensorBoard's image summaries and kd report, and decoding for
// ImageFolder's PNG files and the tests.
#pragma once

#include <string>

#include <torch/types.h>

namespace kd::io {

// `image`: uint8 [H, W, C] with C 1 (gray), 3 (RGB) or 4 (RGBA). Throws kd::TypeError.
std::string encode_png(const torch::Tensor& image);
// The uint8 [H, W, C] image of PNG bytes (C: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; palettes,
// transparency, 16-bit and low bit depths become 8-bit channels). kd::CorruptionError naming
// `where` for a damaged file or more than 2^28 pixels.
torch::Tensor decode_png(const std::string& bytes, const std::string& where = "PNG image");

}  // namespace kd::io
