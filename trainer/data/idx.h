// Reading IDX files (the MNIST family's format), gzipped or not. Written here because Debian
// has no library for this 20-line format; decompression is zlib's.
#pragma once

#include <string>

#include <torch/types.h>

namespace kd::data {

// The tensor stored in an IDX file (uint8 data gives a uint8 tensor). Throws kd::IOError when
// the file cannot be read and kd::CorruptionError when it is not a valid IDX file.
torch::Tensor read_idx(const std::string& path);

}  // namespace kd::data
