#include "trainer/checkpoints/checkpoint_files_internal.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iterator>

#include <torch/torch.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"
#include "trainer/optim/optimizer_state.h"
#include "trainer/optim/optimizer_type.h"
#include "trainer/tree/tree_json.h"

namespace kd::checkpoints {
namespace detail {
namespace {

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::string checksum(std::string_view data) { return hex64(XXH3_64bits(data.data(), data.size())); }

std::string checksum(const std::vector<std::string_view>& parts) {
  struct Free {
    void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
  };
  const std::unique_ptr<XXH3_state_t, Free> state(XXH3_createState());
  if (!state || XXH3_64bits_reset(state.get()) != XXH_OK) throw std::bad_alloc();
  for (const auto& part : parts) XXH3_64bits_update(state.get(), part.data(), part.size());
  return hex64(XXH3_64bits_digest(state.get()));
}

std::optional<int64_t> step_of(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return std::nullopt;
  const std::string digits = name.substr(std::char_traits<char>::length(kPrefix));
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoll(digits);
}

// The step in the name of a checkpoint directory ("ckpt_200", with or without a trailing
// slash); nullopt for a directory named otherwise (e.g. a copy in "pretrained/").
std::optional<int64_t> directory_step(const std::string& path) {
  std::string name = std::filesystem::path(path).lexically_normal().filename().string();
  if (name.empty()) name = std::filesystem::path(path).lexically_normal().parent_path().filename().string();
  return step_of(name);
}

// The optimizer's kind as the experiment names it ("adam"), to refuse restoring one kind's state
// into another (LibTorch would fail deep inside, or load garbage).
std::string optimizer_kind(const torch::optim::Optimizer& o) {
  if (dynamic_cast<const torch::optim::AdamW*>(&o)) return "adamw";
  if (dynamic_cast<const torch::optim::Adam*>(&o)) return "adam";
  if (dynamic_cast<const torch::optim::SGD*>(&o)) return "sgd";
  if (dynamic_cast<const torch::optim::RMSprop*>(&o)) return "rmsprop";
  if (dynamic_cast<const torch::optim::Adagrad*>(&o)) return "adagrad";
  if (dynamic_cast<const torch::optim::LBFGS*>(&o)) return "lbfgs";
  if (const auto* per = dynamic_cast<const optim::PerParameterOptimizer*>(&o)) return per->name();
  return typeid(o).name();
}

// meta.json must describe the checkpoint of its directory. Throws CorruptionError (or
// json::exception for wrongly typed values).
void check_meta(const json& meta, const std::string& path) {
  if (!meta.is_object()) throw CorruptionError(path + "/meta.json is not a kd checkpoint description");
  const auto dir_step = directory_step(path);
  const int64_t step = json_int(meta.at("step"), "meta.json's step");
  if (step < 0 || (dir_step && step != *dir_step)) {
    throw CorruptionError(path + "/meta.json says step " + meta.at("step").dump() + ", not the directory's");
  }
}

// A ConfigError when the checkpoint's optimizer state is another type's than `optimizer`:
// its state cannot be carried over; `advice` says what to do instead.
void check_optimizer_type(const json& meta, const torch::optim::Optimizer& optimizer, const std::string& path,
                          const std::string& advice) {
  if (!meta.contains("optimizer_type")) return;  // format 1 checkpoints did not record it
  const std::string saved = meta["optimizer_type"].get<std::string>();
  if (saved == optimizer_kind(optimizer)) return;
  throw ConfigError(path + " holds the state of an optimizer of type " + saved + ", but the experiment's is " +
                    optimizer_kind(optimizer) + ": its state cannot be carried over; " + advice);
}

}  // namespace detail

using namespace detail;

std::string verify_checkpoint(io::FileSystem& fs, const std::string& path) {
  return verify_checkpoint(fs, path, nullptr);
}

namespace {

// One file of a checkpoint against its manifest entry (size, then checksum): "" when it holds,
// kept in `contents` (when given), the problem otherwise.
std::string verify_file(io::FileSystem& fs, const std::string& path, const char* name, const json& entry,
                        CheckpointContents* contents) {
  std::error_code ec;
  const auto on_disk = std::filesystem::file_size(path + "/" + name, ec);
  if (!ec && on_disk != json_size(entry["size"], std::string("MANIFEST.json's size of ") +
                                                     name)) {  // said before reading a file of any size
    return std::string(name) + " has " + std::to_string(on_disk) + " bytes, the manifest says " + entry["size"].dump();
  }
  // The tensor file into a tensor (no copy when its tensors are read), the others as text.
  const bool tensor_file = std::string_view(name) == kTensorFile;
  torch::Tensor tensor_bytes;
  std::string text;
  try {
    if (tensor_file) {
      fs.read_file_into(path + "/" + name, [&](std::size_t size) {
        tensor_bytes = torch::empty({static_cast<int64_t>(size)}, torch::kByte);
        return static_cast<char*>(tensor_bytes.data_ptr());
      });
    } else {
      text = fs.read_file(path + "/" + name);
    }
  } catch (const IOError& e) {
    return std::string(name) + " is missing or not a regular file";
  }
  const std::string_view data = tensor_file ? std::string_view(static_cast<const char*>(tensor_bytes.data_ptr()),
                                                               static_cast<std::size_t>(tensor_bytes.numel()))
                                            : std::string_view(text);
  if (data.size() != json_size(entry["size"], std::string("MANIFEST.json's size of ") + name)) {
    return std::string(name) + " has " + std::to_string(data.size()) + " bytes, the manifest says " +
           entry["size"].dump();
  }
  if (checksum(data) != entry["xxh3_64"].get<std::string>()) return std::string(name) + " fails its checksum";
  if (contents && tensor_file) contents->tensor_bytes = std::move(tensor_bytes);
  if (contents && !tensor_file) contents->files[name] = std::move(text);
  return "";
}

}  // namespace

std::string detail::verify_checkpoint(io::FileSystem& fs, const std::string& path, CheckpointContents* contents) {
  json manifest;
  try {
    manifest = json::parse(fs.read_file(path + "/" + kManifest));
  } catch (const IOError&) {
    return "no MANIFEST.json (the save did not finish)";
  } catch (const json::exception&) {
    return "MANIFEST.json is not valid JSON";
  }
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_object()) {
    return "MANIFEST.json lists no files";
  }
  const json& files = manifest["files"];
  if (files.contains("state.pt") && !files.contains(kTensorFile)) {
    return "written in checkpoint format 1 (state.pt) by a kd from before 2026-11-29, which this kd does not read "
           "(README: \"Checkpoints of format 1\")";
  }
  // Exactly the files kd writes: a name of another file (say "../../x") is never read.
  const auto& expected = kFiles;
  for (const auto& [name, entry] : files.items()) {
    if (std::find(std::begin(expected), std::end(expected), name) == std::end(expected)) {
      return "MANIFEST.json lists \"" + name + "\", which is not a file of a kd checkpoint";
    }
    if (!entry.is_object() || !entry.contains("size") || !entry["size"].is_number_unsigned() ||
        !entry.contains("xxh3_64") || !entry["xxh3_64"].is_string()) {
      return "MANIFEST.json's entry of " + name + " is not {size, xxh3_64}";
    }
  }
  for (const char* name : expected) {
    if (!files.contains(name)) return std::string("MANIFEST.json does not list ") + name;
  }
  const auto step = directory_step(path);
  const auto manifest_step = [&]() -> std::optional<int64_t> {
    if (!manifest.contains("step")) return std::nullopt;
    try {
      return json_int(manifest["step"], "MANIFEST.json's step");
    } catch (const CorruptionError&) {
      return std::nullopt;
    }
  }();
  if (!manifest_step || (step && *manifest_step != *step)) {
    return "MANIFEST.json's step " + (manifest.contains("step") ? manifest["step"].dump() : std::string("(none)")) +
           " is not the directory's";
  }
  for (const char* name : expected) {
    if (std::string problem = verify_file(fs, path, name, files[name], contents); !problem.empty()) return problem;
  }
  return "";
}

std::vector<std::pair<std::string, torch::Tensor>> read_checkpoint_tensors(const std::string& path,
                                                                           const std::string& group) {
  auto fs = io::posix_file_system();
  CheckpointContents contents;
  const std::string problem = verify_checkpoint(*fs, path, &contents);
  if (!problem.empty()) throw CorruptionError("checkpoint \"" + path + "\" is damaged: " + problem);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  try {
    const json meta = json::parse(contents.files.at("meta.json"));
    check_meta(meta, path);
    TensorReader tensors(contents, path);
    if (group == "ema") {  // a tree like TrainState::params, none without optimizer.ema_decay
      const Tree ema = meta.contains("ema") ? tensors.view_tree(meta.at("ema")) : Tree();
      if (ema.is_none() || ema.flatten().empty()) {
        throw ConfigError("checkpoint \"" + path +
                          "\" holds no EMA of the params (its run did not set optimizer.ema_decay)");
      }
      for (const auto& [name, leaf] : ema.flatten_paths()) out.emplace_back(name.str(), leaf.tensor().clone());
      return out;
    }
    const json& entries = meta.at(group);
    if (!entries.is_array()) throw CorruptionError(path + "/meta.json: \"" + group + "\" is not a list");
    for (const auto& e : entries) out.emplace_back(e.at(0).get<std::string>(), tensors.get(e.at(1)));
  } catch (const json::exception& e) {
    throw CorruptionError(path + "/meta.json: " + e.what());
  } catch (const c10::Error& e) {
    throw CorruptionError(path + ": " + e.msg().substr(0, e.msg().find('\n')));
  }
  return out;
}

void read_checkpoint_optimizer_state(const std::string& path, torch::optim::Optimizer& optimizer,
                                     const torch::nn::Module& model) {
  auto fs = io::posix_file_system();
  CheckpointContents contents;
  const std::string problem = verify_checkpoint(*fs, path, &contents);
  if (!problem.empty()) throw CorruptionError("checkpoint \"" + path + "\" is damaged: " + problem);
  try {
    const json meta = json::parse(contents.files.at("meta.json"));
    check_meta(meta, path);
    check_optimizer_type(meta, optimizer, path, "leave out opt_state: true");
    TensorReader tensors(contents, path);
    optim::load_optimizer_state(optimizer, model, tensors.view_tree(meta.at("optimizer")));  // copied there
  } catch (const json::exception& e) {
    throw CorruptionError(path + "/meta.json: " + e.what());
  } catch (const c10::Error& e) {
    throw CorruptionError(path + ": " + e.msg().substr(0, e.msg().find('\n')));
  }
}

}  // namespace kd::checkpoints
