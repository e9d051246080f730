// The safetensors format, which every checkpoint's tensors are saved in (state.safetensors) and
// kd export writes: a JSON header and raw little-endian data, readable by any safetensors reader
// (Python `safetensors`, Rust, JS). Written here since Debian has no safetensors library; every
// file read is checked before its bytes are used.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace kd::checkpoints {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// A safetensors file as the pieces it is written from: the header (its length and JSON), then
// every tensor's bytes in their own memory (contiguous CPU tensors kept here), so that it is
// written without a copy of the data (io::FileSystem::write_file_parts).
struct SafetensorsParts {
  std::string header;
  std::vector<torch::Tensor> data;
  std::vector<std::string_view> views() const;  // header, then each tensor's bytes
};
SafetensorsParts safetensors_parts(const NamedTensors& tensors,
                                   const std::map<std::string, std::string>& metadata = {});

// The bytes of a safetensors file (its parts joined).
std::string safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});

// The tensors of a safetensors file's bytes, in the file's order. Everything is checked before
// it is read (header size, JSON, dtypes, shapes, that each tensor's bytes lie inside the data):
// kd::CorruptionError naming `where` otherwise.
NamedTensors tensors_from_safetensors(const std::string& bytes, const std::string& where);
// The same from the file's bytes in a uint8 CPU tensor: each tensor is a view into it (no copy)
// where its data is aligned for its dtype, a copy otherwise. The views keep `bytes` alive.
NamedTensors tensors_from_safetensors(const torch::Tensor& bytes, const std::string& where);

}  // namespace kd::checkpoints
