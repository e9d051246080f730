#include "trainer/checkpoints/checkpointer.h"

#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>

#include <ATen/Context.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "trainer/checkpoints/export.h"
#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/optim/optimizer_state.h"
#include "trainer/tree/tree_json.h"

namespace kd::checkpoints {
namespace {

using json = nlohmann::ordered_json;
constexpr const char* kManifest = "MANIFEST.json";
constexpr const char* kPrefix = "ckpt_";
// The files of a checkpoint, all listed in its manifest; checkpoints of format 1 have state.pt
// (a TorchScript archive) instead of state.safetensors.
constexpr const char* kTensorFile = "state.safetensors";
constexpr const char* kFiles[] = {kTensorFile, "meta.json", "config.yaml"};
constexpr const char* kLegacyFiles[] = {"state.pt", "meta.json", "config.yaml"};

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string checksum(std::string_view data) { return hex64(XXH3_64bits(data.data(), data.size())); }

std::optional<int64_t> step_of(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return std::nullopt;
  const std::string digits = name.substr(std::char_traits<char>::length(kPrefix));
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoll(digits);
}

// The step in the name of a checkpoint directory ("ckpt_200", with or without a trailing
// slash); nullopt for a directory named otherwise (e.g. a copy in "pretrained/").
std::optional<int64_t> directory_step(const std::string& path) {
  std::string name = std::filesystem::path(path).lexically_normal().filename().string();
  if (name.empty()) name = std::filesystem::path(path).lexically_normal().parent_path().filename().string();
  return step_of(name);
}

// Tensors are stored in state.safetensors as t0, t1, ...; the names and the structure of trees
// live in meta.json. safetensors is read by kd itself (tensors_from_safetensors checks every
// offset and size), so a crafted file can only be refused.
class TensorWriter {
 public:
  json add(const torch::Tensor& t) {
    const std::string key = "t" + std::to_string(tensors_.size());
    tensors_.emplace_back(key, t.detach().cpu());
    return key;
  }
  json add_tree(const Tree& tree) {
    return tree_to_json(tree, [this](const torch::Tensor& t) { return add(t); });
  }
  std::string bytes() const { return safetensors_bytes(tensors_); }

 private:
  NamedTensors tensors_;
};

// Reads the tensors of a checkpoint: state.safetensors, or the TorchScript archive state.pt of
// checkpoints written before it (format 1), only when KD_READ_LEGACY_CHECKPOINTS=1, because
// LibTorch's archive reader can abort the process on a crafted file.
class TensorReader {
 public:
  TensorReader(FileSystem& fs, const std::string& path) : where_(path) {
    if (legacy(fs, path)) {
      if (std::getenv("KD_READ_LEGACY_CHECKPOINTS") == nullptr ||
          std::string(std::getenv("KD_READ_LEGACY_CHECKPOINTS")) != "1") {
        throw CorruptionError(path + " was written by an older kd (state.pt, read by LibTorch's TorchScript loader, "
                              "which a crafted file can crash); if it is yours or you trust it, read it with "
                              "KD_READ_LEGACY_CHECKPOINTS=1; the next checkpoint is saved in the current format");
      }
      const std::string bytes = fs.read_file(path + "/state.pt");
      try {
        archive_ = std::make_unique<torch::serialize::InputArchive>();
        archive_->load_from(bytes.data(), bytes.size());
      } catch (const c10::Error& e) {
        throw CorruptionError(path + ": state.pt cannot be read: " + e.msg().substr(0, e.msg().find('\n')));
      }
      return;
    }
    for (auto& [name, t] : tensors_from_safetensors(fs.read_file(path + "/" + kTensorFile), path + "/" + kTensorFile)) {
      tensors_.emplace(name, std::move(t));
    }
  }
  static bool legacy(FileSystem& fs, const std::string& path) {
    return !fs.exists(path + "/" + kTensorFile) && fs.exists(path + "/state.pt");
  }
  torch::Tensor get(const json& key) {
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
  torch::serialize::InputArchive* archive() { return archive_.get(); }

 private:
  std::string where_;
  std::map<std::string, torch::Tensor> tensors_;
  std::unique_ptr<torch::serialize::InputArchive> archive_;
};

// The optimizer's kind as the experiment names it ("adam"), to refuse restoring one kind's state
// into another (LibTorch would fail deep inside, or load garbage).
std::string optimizer_kind(const torch::optim::Optimizer& o) {
  if (dynamic_cast<const torch::optim::AdamW*>(&o)) return "adamw";
  if (dynamic_cast<const torch::optim::Adam*>(&o)) return "adam";
  if (dynamic_cast<const torch::optim::SGD*>(&o)) return "sgd";
  if (dynamic_cast<const torch::optim::RMSprop*>(&o)) return "rmsprop";
  if (dynamic_cast<const torch::optim::Adagrad*>(&o)) return "adagrad";
  if (dynamic_cast<const torch::optim::LBFGS*>(&o)) return "lbfgs";
  return typeid(o).name();
}

// meta.json must describe the checkpoint of its directory. Throws CorruptionError (or
// json::exception for wrongly typed values).
void check_meta(const json& meta, const std::string& path) {
  if (!meta.is_object()) throw CorruptionError(path + "/meta.json is not a kd checkpoint description");
  const auto dir_step = directory_step(path);
  const int64_t step = meta.at("step").get<int64_t>();
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

std::vector<c10::Device> generator_devices() {
  std::vector<c10::Device> out{c10::Device(c10::kCPU)};
  if (torch::cuda::is_available()) {
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
      out.emplace_back(c10::kCUDA, static_cast<c10::DeviceIndex>(i));
    }
  }
  return out;
}

}  // namespace

CheckpointerOptions CheckpointerOptions::from_config(const config::Node* node) {
  CheckpointerOptions o;
  if (node == nullptr || node->is_null()) return o;
  o.save_interval_steps = node->get_int("save_interval_steps", 1000);
  o.max_to_keep = node->get_int("max_to_keep", 3);
  o.keep_period = node->get_int("keep_period", 0);
  o.best_metric_path = node->get_string("best_metric_path", "");
  const std::string mode = node->get_string("best_mode", "max");
  if (mode != "max" && mode != "min") throw ConfigError(node->where() + ": best_mode must be \"max\" or \"min\"");
  o.best_is_max = mode == "max";
  if (o.max_to_keep < 1) throw ConfigError(node->where() + ": max_to_keep must be >= 1 (the newest checkpoint is always kept)");
  if (o.save_interval_steps < 0 || o.keep_period < 0) {
    throw ConfigError(node->where() + ": save_interval_steps and keep_period must be >= 0");
  }
  if (!o.best_metric_path.empty() && o.best_metric_path.find('/') == std::string::npos) {
    throw ConfigError(node->where() + ": best_metric_path must be \"<eval name>/<metric>\", e.g. test/metrics/accuracy");
  }
  node->check_unknown_keys();
  return o;
}

Checkpointer::Checkpointer(std::string directory, CheckpointerOptions options, std::shared_ptr<FileSystem> fs)
    : directory_(std::move(directory)), options_(std::move(options)), fs_(std::move(fs)) {
  const std::string best = directory_ + "/best.json";
  if (!options_.best_metric_path.empty() && fs_->exists(best)) {
    try {
      const json j = json::parse(fs_->read_file(best));
      if (j.value("metric", "") == options_.best_metric_path) {
        best_step_ = j.at("step").get<int64_t>();
        best_value_ = j.at("value").get<double>();
      }
    } catch (const json::exception&) {
      // A damaged best.json only loses the record of the best step; it is rewritten later.
    }
  }
}

bool Checkpointer::should_save(int64_t step) const {
  return options_.save_interval_steps > 0 && step % options_.save_interval_steps == 0;
}

std::string Checkpointer::save(const Snapshot& s) {
  TensorWriter tensors;
  json meta;
  meta["format"] = "kd-checkpoint-2";
  meta["step"] = s.step;
  meta["data"] = {{"epoch", s.data.epoch}, {"index", s.data.index}};
  json params = json::array(), buffers = json::array();
  if (s.model) {
    for (const auto& p : s.model->named_parameters(true)) params.push_back({p.key(), tensors.add(p.value())});
    for (const auto& b : s.model->named_buffers(true)) buffers.push_back({b.key(), tensors.add(b.value())});
  }
  meta["params"] = params;
  meta["collections"] = buffers;
  if (s.optimizer) {
    if (!s.model) throw Error("saving an optimizer's state needs its model (Snapshot::model)");
    meta["optimizer"] = tensors.add_tree(optim::optimizer_state_tree(*s.optimizer, *s.model));
    meta["optimizer_type"] = optimizer_kind(*s.optimizer);
  }
  meta["ema"] = tensors.add_tree(s.ema);
  meta["aux"] = tensors.add_tree(s.aux);
  meta["aux_steps"] = s.aux_steps;
  meta["loss_states"] = "weighted by examples";
  json rng = json::array();
  for (const auto& device : generator_devices()) {
    auto generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    rng.push_back({device.str(), tensors.add(generator.get_state())});
  }
  meta["rng"] = rng;

  const std::vector<std::pair<std::string, std::string>> files = {
      {kTensorFile, tensors.bytes()}, {"meta.json", meta.dump(1)}, {"config.yaml", s.config_yaml}};
  json manifest;
  manifest["step"] = s.step;
  for (const auto& [name, data] : files) manifest["files"][name] = {{"size", data.size()}, {"xxh3_64", checksum(data)}};

  const std::string final_path = directory_ + "/" + kPrefix + std::to_string(s.step);
  const std::string tmp = directory_ + "/tmp." + kPrefix + std::to_string(s.step) + "." + std::to_string(::getpid());
  fs_->create_directories(directory_);
  try {
    fs_->remove_all(tmp);
    fs_->create_directories(tmp);
    for (const auto& [name, data] : files) fs_->write_file(tmp + "/" + name, data);
    fs_->write_file(tmp + "/" + kManifest, manifest.dump(1));
    fs_->sync_directory(tmp);
    if (fs_->exists(final_path)) {
      // The same step saved again (e.g. the end of training right after a periodic save):
      // move the old one aside first so the rename stays atomic.
      const std::string old = final_path + ".old." + std::to_string(::getpid());
      fs_->rename(final_path, old);
      fs_->rename(tmp, final_path);
      fs_->remove_all(old);
    } else {
      fs_->rename(tmp, final_path);
    }
    fs_->sync_directory(directory_);
  } catch (Error& e) {
    try {
      fs_->remove_all(tmp);
      const std::string old = final_path + ".old." + std::to_string(::getpid());
      if (fs_->exists(old) && !fs_->exists(final_path)) fs_->rename(old, final_path);
    } catch (const Error&) {
    }
    e.add_context("saving the checkpoint of step " + std::to_string(s.step) + " (earlier checkpoints are intact)");
    throw;
  }
  prune();
  return final_path;
}

std::string verify_checkpoint(FileSystem& fs, const std::string& path) {
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
  // Exactly the files kd writes: a name of another file (say "../../x") is never read.
  const bool legacy = files.contains("state.pt") && !files.contains(kTensorFile);
  const auto& expected = legacy ? kLegacyFiles : kFiles;
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
  if (!manifest.contains("step") || !manifest["step"].is_number_integer() ||
      (step && manifest["step"].get<int64_t>() != *step)) {
    return "MANIFEST.json's step " + (manifest.contains("step") ? manifest["step"].dump() : std::string("(none)")) +
           " is not the directory's";
  }
  for (const char* name : expected) {
    const json& entry = files[name];
    std::error_code ec;
    const auto on_disk = std::filesystem::file_size(path + "/" + name, ec);
    if (!ec && on_disk != entry["size"].get<uint64_t>()) {  // said before reading a file of any size
      return std::string(name) + " has " + std::to_string(on_disk) + " bytes, the manifest says " + entry["size"].dump();
    }
    std::string data;
    try {
      data = fs.read_file(path + "/" + name);
    } catch (const IOError& e) {
      return std::string(name) + " is missing or not a regular file";
    }
    if (data.size() != entry["size"].get<uint64_t>()) {
      return std::string(name) + " has " + std::to_string(data.size()) + " bytes, the manifest says " + entry["size"].dump();
    }
    if (checksum(data) != entry["xxh3_64"].get<std::string>()) return std::string(name) + " fails its checksum";
  }
  return "";
}

std::vector<CheckpointInfo> Checkpointer::probe() const {
  std::vector<CheckpointInfo> out;
  for (const auto& name : fs_->list(directory_)) {
    if (auto step = step_of(name)) {
      const std::string path = directory_ + "/" + name;
      out.push_back({*step, path, verify_checkpoint(*fs_, path)});
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step > b.step; });
  return out;
}

std::optional<CheckpointInfo> Checkpointer::latest_valid() const {
  for (const auto& info : probe()) {
    if (info.valid()) return info;
  }
  return std::nullopt;
}

void Checkpointer::restore(const std::string& path, Snapshot& s) const {
  const std::string problem = verify_checkpoint(*fs_, path);
  if (!problem.empty()) throw CorruptionError("checkpoint \"" + path + "\" is damaged: " + problem);
  json meta;
  try {
    meta = json::parse(fs_->read_file(path + "/meta.json"));
  } catch (const json::exception& e) {
    throw CorruptionError(path + "/meta.json: " + e.what());
  }
  TensorReader tensors(*fs_, path);
  torch::NoGradGuard no_grad;
  auto copy_named = [&](const json& entries, const torch::OrderedDict<std::string, torch::Tensor>& live, const char* group) {
    std::vector<std::string> missing;
    if (!entries.is_array()) throw CorruptionError(path + "/meta.json: \"" + group + "\" is not a list");
    for (const auto& e : entries) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_string()) {
        throw CorruptionError(path + "/meta.json: an entry of \"" + group + "\" is not [name, tensor]");
      }
    }
    for (const auto& item : live) {
      const json* found = nullptr;
      for (const auto& e : entries) {
        if (e[0] == item.key()) found = &e;
      }
      if (!found) {
        missing.push_back(item.key());
        continue;
      }
      const torch::Tensor saved = tensors.get((*found)[1]);
      if (saved.sizes() != item.value().sizes() || saved.scalar_type() != item.value().scalar_type() ||
          saved.layout() != item.value().layout()) {
        throw CorruptionError(path + ": " + group + "." + item.key() + " is " + describe_tensor(saved) +
                              " in the checkpoint but " + describe_tensor(item.value()) + " in the model");
      }
      item.value().copy_(saved);
    }
    if (!missing.empty() || entries.size() != live.size()) {
      throw CorruptionError(path + ": the checkpoint's " + group + " do not match the model (" +
                            std::to_string(entries.size()) + " saved, " + std::to_string(live.size()) +
                            " in the model" + (missing.empty() ? "" : ", missing " + missing.front()) + ")");
    }
  };
  try {
    check_meta(meta, path);
    if (s.optimizer) {
      check_optimizer_type(meta, *s.optimizer, path,
                           "start the new optimizer from these parameters in another workdir with "
                           "init_transform: {checkpoint: " +
                               std::filesystem::path(path).parent_path().parent_path().string() + "}");
    }
    if (s.model) {
      copy_named(meta.at("params"), s.model->named_parameters(true), "params");
      copy_named(meta.at("collections"), s.model->named_buffers(true), "collections");
    }
    if (s.optimizer) {
      if (tensors.archive()) {  // format 1
        torch::serialize::InputArchive optimizer_archive;
        tensors.archive()->read("optimizer", optimizer_archive);
        s.optimizer->state().clear();  // load() only sets the states the archive holds
        s.optimizer->load(optimizer_archive);
      } else {
        if (!s.model) throw Error("restoring an optimizer's state needs its model (Snapshot::model)");
        optim::load_optimizer_state(*s.optimizer, *s.model, tensors.get_tree(meta.at("optimizer")));
      }
    }
    const Tree ema = tensors.get_tree(meta.at("ema"));
    if (!s.ema.is_none()) {
      const auto live = s.ema.flatten(), saved = ema.flatten();
      if (live.size() != saved.size()) throw CorruptionError(path + ": the checkpoint's EMA params do not match the model");
      for (std::size_t i = 0; i < live.size(); ++i) {
        const Tree& from = saved[i].second;
        const torch::Tensor& to = live[i].second.tensor();
        if (live[i].first != saved[i].first || !from.is_tensor() || from.tensor().sizes() != to.sizes() ||
            from.tensor().scalar_type() != to.scalar_type()) {
          throw CorruptionError(path + ": the checkpoint's EMA of " + live[i].first + " does not match the model");
        }
        to.copy_(from.tensor());
      }
    }
    s.aux = tensors.get_tree(meta.at("aux"));
    if (!meta.contains("loss_states") && s.aux.find("loss_states")) {
      // Saved by a kd whose loss states counted steps, not examples: merged with today's they
      // would give a wrong average, so the interval's losses restart here.
      s.aux.erase("loss_states");
    }
    s.aux_steps = meta.at("aux_steps").get<int64_t>();
    s.step = meta.at("step").get<int64_t>();
    s.data = {meta.at("data").at("epoch").get<int64_t>(), meta.at("data").at("index").get<int64_t>()};
    for (const auto& entry : meta.at("rng")) {
      const c10::Device device(entry.at(0).get<std::string>());
      if (device.is_cuda() && (!torch::cuda::is_available() || device.index() >= static_cast<int>(torch::cuda::device_count()))) {
        continue;  // resumed on a machine without that GPU
      }
      auto generator = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(tensors.get(entry.at(1)));
    }
    s.config_yaml = fs_->read_file(path + "/config.yaml");
  } catch (const json::exception& e) {
    throw CorruptionError(path + "/meta.json is not a kd checkpoint description: " + e.what());
  } catch (const c10::Error& e) {
    throw CorruptionError(path + ": " + e.msg().substr(0, e.msg().find('\n')));
  }
}

bool Checkpointer::report(int64_t step, const std::string& collection,
                          const std::vector<std::pair<std::string, double>>& values) {
  if (options_.best_metric_path.empty()) return false;
  for (const auto& [name, value] : values) {
    if (collection + "/" + name != options_.best_metric_path || !std::isfinite(value)) continue;
    const bool better = !best_step_ || (options_.best_is_max ? value > best_value_ : value < best_value_);
    if (!better) return false;
    best_step_ = step;
    best_value_ = value;
    return true;
  }
  return false;
}

void Checkpointer::write_best() {
  fs_->create_directories(directory_);
  const json j = {{"metric", options_.best_metric_path}, {"step", *best_step_}, {"value", best_value_}};
  const std::string tmp = directory_ + "/best.json.tmp";
  fs_->write_file(tmp, j.dump());
  fs_->rename(tmp, directory_ + "/best.json");
}

void Checkpointer::prune() {
  // By name and manifest presence only: re-checksumming every kept checkpoint on each save
  // would cost a full read of them; damaged ones are found when resuming.
  std::vector<int64_t> steps;
  for (const auto& name : fs_->list(directory_)) {
    const auto step = step_of(name);
    if (step && fs_->exists(directory_ + "/" + name + "/" + kManifest)) steps.push_back(*step);
  }
  std::sort(steps.rbegin(), steps.rend());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const int64_t step = steps[i];
    const bool keep = static_cast<int64_t>(i) < options_.max_to_keep ||
                      (options_.keep_period > 0 && step % options_.keep_period == 0) ||
                      (best_step_ && *best_step_ == step);
    if (!keep) fs_->remove_all(directory_ + "/" + kPrefix + std::to_string(step));
  }
}

std::string Checkpointer::set_aside(const std::string& path) {
  const std::string name = std::filesystem::path(path).lexically_normal().filename().string();
  std::string target = directory_ + "/damaged." + name;
  for (int i = 1; fs_->exists(target); ++i) target = directory_ + "/damaged." + name + "." + std::to_string(i);
  fs_->rename(path, target);
  fs_->sync_directory(directory_);
  return target;
}

void Checkpointer::clean_up_interrupted_saves() {
  for (const auto& name : fs_->list(directory_)) {
    const std::string path = directory_ + "/" + name;
    if (name.rfind("tmp.", 0) == 0) {
      fs_->remove_all(path);  // a save that never finished: incomplete by definition
      continue;
    }
    const auto old = name.find(".old.");
    if (old != std::string::npos && step_of(name.substr(0, old))) {
      const std::string final_path = directory_ + "/" + name.substr(0, old);
      if (fs_->exists(final_path)) {
        fs_->remove_all(path);
      } else {
        fs_->rename(path, final_path);  // interrupted between the two renames of a re-save
      }
    }
  }
}

std::vector<std::pair<std::string, torch::Tensor>> read_checkpoint_tensors(const std::string& path,
                                                                           const std::string& group) {
  auto fs = posix_file_system();
  const std::string problem = verify_checkpoint(*fs, path);
  if (!problem.empty()) throw CorruptionError("checkpoint \"" + path + "\" is damaged: " + problem);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  try {
    const json meta = json::parse(fs->read_file(path + "/meta.json"));
    check_meta(meta, path);
    TensorReader tensors(*fs, path);
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
  auto fs = posix_file_system();
  const std::string problem = verify_checkpoint(*fs, path);
  if (!problem.empty()) throw CorruptionError("checkpoint \"" + path + "\" is damaged: " + problem);
  try {
    const json meta = json::parse(fs->read_file(path + "/meta.json"));
    check_meta(meta, path);
    check_optimizer_type(meta, optimizer, path, "leave out opt_state: true");
    TensorReader tensors(*fs, path);
    if (tensors.archive()) {
      torch::serialize::InputArchive optimizer_archive;
      tensors.archive()->read("optimizer", optimizer_archive);
      optimizer.state().clear();
      optimizer.load(optimizer_archive);
    } else {
      optim::load_optimizer_state(optimizer, model, tensors.get_tree(meta.at("optimizer")));
    }
  } catch (const json::exception& e) {
    throw CorruptionError(path + "/meta.json: " + e.what());
  } catch (const c10::Error& e) {
    throw CorruptionError(path + ": " + e.msg().substr(0, e.msg().find('\n')));
  }
}

}  // namespace kd::checkpoints
