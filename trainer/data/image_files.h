// Decoding image files for the ImageFolder source: PNG (io::decode_png, libpng) and JPEG
// (libjpeg-turbo), told apart by their first bytes.
#pragma once

#include <string>

#include <torch/types.h>

namespace kd::data {

// The uint8 [H, W, C] image of a PNG or JPEG file's bytes (C: 1 gray, 3 RGB, 4 RGBA; palettes,
// 16-bit and low bit depths are converted to 8-bit gray or RGB(A)). kd::CorruptionError naming
// `where` for anything else, a damaged file, or more than 2^28 pixels.
torch::Tensor decode_image(const std::string& bytes, const std::string& where);

}  // namespace kd::data
