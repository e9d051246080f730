// The files of a checkpoint directory, for the checkpoints module itself (internal): names,
// the tensor file (state.safetensors, or format 1's TorchScript archive state.pt), meta.json's
// checks and the manifest's verification. Everything read here comes from outside and is checked
// before use; problems are kd::CorruptionError (or ConfigError for an experiment that does not fit).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <torch/serialize.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "trainer/checkpoints/export.h"
#include "trainer/common/error.h"
#include "trainer/common/torch_fwd.h"
#include "trainer/io/file_system.h"
#include "trainer/tree/tree.h"
#include "trainer/tree/tree_json.h"

namespace kd::checkpoints::detail {

using json = nlohmann::ordered_json;

inline constexpr const char* kManifest = "MANIFEST.json";
inline constexpr const char* kPrefix = "ckpt_";
// The files of a checkpoint, all listed in its manifest; checkpoints of format 1 have state.pt
// (a TorchScript archive) instead of state.safetensors.
inline constexpr const char* kTensorFile = "state.safetensors";
inline constexpr const char* kFiles[] = {kTensorFile, "meta.json", "config.yaml"};
inline constexpr const char* kLegacyFiles[] = {"state.pt", "meta.json", "config.yaml"};

// XXH3-64 of `data` (of the parts joined), as 16 hex digits.
std::string checksum(std::string_view data);
std::string checksum(const std::vector<std::string_view>& parts);

// A checkpoint's files as verify_checkpoint read them, so that restoring reads each once: the
// tensor file's bytes in a uint8 tensor (its tensors are views into it), the others as text.
struct CheckpointContents {
  torch::Tensor tensor_bytes;                // state.safetensors
  std::map<std::string, std::string> files;  // meta.json, config.yaml, format 1's state.pt
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

// Reads the tensors of a checkpoint: state.safetensors, or the TorchScript archive state.pt of
// checkpoints written before it (format 1), only when KD_READ_LEGACY_CHECKPOINTS=1, because
// LibTorch's archive reader can abort the process on a crafted file.
class TensorReader {
 public:
  // From the files verify_checkpoint read (`contents`) of the checkpoint at `path`.
  TensorReader(const CheckpointContents& contents, const std::string& path) : where_(path) {
    if (legacy(contents)) {
      if (std::getenv("KD_READ_LEGACY_CHECKPOINTS") == nullptr ||
          std::string(std::getenv("KD_READ_LEGACY_CHECKPOINTS")) != "1") {
        throw CorruptionError(path +
                              " was written by an older kd (state.pt, read by LibTorch's TorchScript loader, "
                              "which a crafted file can crash); if it is yours or you trust it, read it with "
                              "KD_READ_LEGACY_CHECKPOINTS=1; the next checkpoint is saved in the current format");
      }
      const std::string& bytes = contents.files.at("state.pt");
      try {
        archive_ = std::make_unique<torch::serialize::InputArchive>();
        archive_->load_from(bytes.data(), bytes.size());
      } catch (const c10::Error& e) {
        throw CorruptionError(path + ": state.pt cannot be read: " + e.msg().substr(0, e.msg().find('\n')));
      }
      return;
    }
    for (auto& [name, t] : tensors_from_safetensors(contents.tensor_bytes, path + "/" + kTensorFile)) {
      tensors_.emplace(name, std::move(t));
    }
  }
  static bool legacy(const CheckpointContents& contents) { return contents.files.count("state.pt") != 0; }
  // A tensor of its own (safe to keep).
  torch::Tensor get(const json& key) {
    torch::Tensor t = view(key);
    return archive_ ? t : t.clone();
  }
  // A view into the file's bytes, for a tensor copied right away (it keeps all the bytes alive).
  torch::Tensor view(const json& key) {
    const std::string name = key.get<std::string>();
    if (archive_) {
      torch::Tensor t;
      try {
        archive_->read(name, t);
      } catch (const std::exception& e) {
        throw CorruptionError(where_ + ": state.pt has no tensor " + key.dump());
      }
      return t;
    }
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
  torch::serialize::InputArchive* archive() { return archive_.get(); }

 private:
  std::string where_;
  std::map<std::string, torch::Tensor> tensors_;
  std::unique_ptr<torch::serialize::InputArchive> archive_;
};

}  // namespace kd::checkpoints::detail
