// The files of a checkpoint directory, for the checkpoints module itself (internal): names,
// the tensor file (state.safetensors), meta.json's
// checks and the manifest's verification. Everything read here comes from outside and is checked
// before use; problems are kd::CorruptionError (or ConfigError for an experiment that does not fit).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "trainer/checkpoints/safetensors.h"
#include "trainer/common/error.h"
#include "trainer/common/torch_fwd.h"
#include "trainer/io/file_system.h"
#include "trainer/tree/tree.h"
#include "trainer/tree/tree_json.h"

namespace kd::checkpoints::detail {

using json = nlohmann::ordered_json;

inline constexpr const char* kManifest = "MANIFEST.json";
inline constexpr const char* kPrefix = "ckpt_";
// The files of a checkpoint, all listed in its manifest. (Checkpoints of format 1, written by kd
// before 2026-11-29, had a TorchScript archive, state.pt, instead of state.safetensors: kd no
// longer reads them, and verify_checkpoint says so.)
inline constexpr const char* kTensorFile = "state.safetensors";
inline constexpr const char* kFiles[] = {kTensorFile, "meta.json", "config.yaml"};

// XXH3-64 of `data` (of the parts joined), as 16 hex digits.
std::string checksum(std::string_view data);
std::string checksum(const std::vector<std::string_view>& parts);

// A checkpoint's files as verify_checkpoint read them, so that restoring reads each once: the
// tensor file's bytes in a uint8 tensor (its tensors are views into it), the others as text.
struct CheckpointContents {
  torch::Tensor tensor_bytes;                // state.safetensors
  std::map<std::string, std::string> files;  // meta.json, config.yaml
};
// verify_checkpoint, keeping what it read in `contents` when the checkpoint is valid.
std::string verify_checkpoint(io::FileSystem& fs, const std::string& path, CheckpointContents* contents);
// The step of a directory named "ckpt_<step>", or nullopt.
std::optional<int64_t> step_of(const std::string& name);
// The step in the name of a checkpoint directory ("ckpt_200", with or without a trailing
// slash); nullopt for a directory named otherwise (e.g. a copy in "pretrained/").
std::optional<int64_t> directory_step(const std::string& path);
// The optimizer's kind as the experiment names it ("adam").
std::string optimizer_kind(const torch::optim::Optimizer& o);
// ConfigError when the checkpoint's optimizer state is another type's; `advice` says what to do.
void check_optimizer_type(const json& meta, const torch::optim::Optimizer& optimizer, const std::string& path,
                          const std::string& advice);
// meta.json must describe the checkpoint of its directory.
void check_meta(const json& meta, const std::string& path);

// Tensors are stored in state.safetensors as t0, t1, ...; the names and the structure of trees
// live in meta.json. safetensors is read by kd itself (tensors_from_safetensors checks every
// offset and size), so a crafted file can only be refused.
class TensorWriter {
 public:
  json add(const torch::Tensor& t) {
    std::string key = "t";  // appended, not concatenated: GCC 12 misreads the latter as an overflow
    key.append(std::to_string(tensors_.size()));
    tensors_.emplace_back(key, t.detach().cpu());
    return key;
  }
  json add_tree(const Tree& tree) {
    return tree_to_json(tree, [this](const torch::Tensor& t) { return add(t); });
  }
  // The file as pieces in the tensors' own memory (written and checksummed without a copy).
  SafetensorsParts parts() const { return safetensors_parts(tensors_); }

 private:
  NamedTensors tensors_;
};

// Reads the tensors of a checkpoint's state.safetensors.
class TensorReader {
 public:
  // From the files verify_checkpoint read (`contents`) of the checkpoint at `path`.
  TensorReader(const CheckpointContents& contents, const std::string& path) : where_(path) {
    for (auto& [name, t] : tensors_from_safetensors(contents.tensor_bytes, path + "/" + kTensorFile)) {
      tensors_.emplace(name, std::move(t));
    }
  }
  // A tensor of its own (safe to keep).
  torch::Tensor get(const json& key) { return view(key).clone(); }
  // A view into the file's bytes, for a tensor copied right away (it keeps all the bytes alive).
  torch::Tensor view(const json& key) {
    const std::string name = key.get<std::string>();
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw CorruptionError(where_ + ": " + kTensorFile + " has no tensor " + key.dump());
    return it->second;
  }
  Tree get_tree(const json& j) {
    return tree_from_json(j, [this](const json& key) { return get(key); });
  }
  Tree view_tree(const json& j) {
    return tree_from_json(j, [this](const json& key) { return view(key); });
  }

 private:
  std::string where_;
  std::map<std::string, torch::Tensor> tensors_;
};

}  // namespace kd::checkpoints::detail
