#include "trainer/checkpoints/export.h"

#include <filesystem>
#include <string>

#include <torch/serialize.h>
#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/io/file_system.h"

namespace kd::checkpoints {

std::string torch_pickle_bytes(const NamedTensors& tensors) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach().to(torch::kCPU).contiguous());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  return std::string(bytes.begin(), bytes.end());
}

void write_new_file(const std::string& path, const std::string& bytes) {
  // Checked first for a clear message; the creation itself refuses an existing file too (one
  // made meanwhile).
  if (std::filesystem::exists(path)) {
    throw ConfigError("\"" + path + "\" already exists; choose another --out, or add --overwrite to replace it");
  }
  io::create_file_atomically(*io::posix_file_system(), path, bytes);
}

}  // namespace kd::checkpoints
