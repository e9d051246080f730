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
#include <set>
#include <sstream>

#include <ATen/Context.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "trainer/checkpoints/checkpoint_files_internal.h"
#include "trainer/checkpoints/random_states.h"
#include "trainer/checkpoints/safetensors.h"
#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/optim/optimizer_state.h"
#include "trainer/tree/tree_json.h"

namespace kd::checkpoints {
namespace {

using namespace detail;

}  // namespace

CheckpointerOptions CheckpointerOptions::from_config(const config::Node& node) {
  const CheckpointerOptions defaults;
  CheckpointerOptions o;
  o.save_interval_steps = node.get_int("save_interval_steps", defaults.save_interval_steps);
  o.max_to_keep = node.get_int("max_to_keep", defaults.max_to_keep);
  o.keep_period = node.get_int("keep_period", defaults.keep_period);
  o.best_metric_path = node.get_string("best_metric_path", defaults.best_metric_path);
  if (!o.best_metric_path.empty()) o.best_is_max = read_metric_mode(node, "best_mode", o.best_metric_path);
  if (o.max_to_keep < 1)
    throw ConfigError(node.where() + ": max_to_keep must be >= 1 (the newest checkpoint is always kept)");
  if (o.save_interval_steps < 0 || o.keep_period < 0) {
    throw ConfigError(node.where() + ": save_interval_steps and keep_period must be >= 0");
  }
  if (!o.best_metric_path.empty() && o.best_metric_path.find('/') == std::string::npos) {
    throw ConfigError(node.where() + ": best_metric_path must be \"<eval name>/<metric>\", e.g. test/metrics/accuracy");
  }
  node.check_unknown_keys();
  return o;
}

bool read_metric_mode(const config::Node& node, const char* key, const std::string& metric) {
  if (!node.has(key)) {
    const auto slash = metric.find('/');
    if (slash != std::string::npos && metric.compare(slash + 1, 7, "losses/") == 0) return false;
    throw ConfigError(node.where() + ": " + node.key_path() + "." + key + " is needed for \"" + metric +
                      "\": max if larger is better (an accuracy), min if smaller is (an error rate); kd infers min "
                      "only for losses/");
  }
  const std::string mode = node.get_string(key);
  if (mode != "max" && mode != "min") {
    throw ConfigError(node.child(key).where() + ": " + node.key_path() + "." + key + " is max or min, got \"" + mode +
                      "\"");
  }
  return mode == "max";
}

Checkpointer::Checkpointer(std::string directory, CheckpointerOptions options, std::shared_ptr<io::FileSystem> fs)
    : directory_(std::move(directory)), options_(std::move(options)), fs_(std::move(fs)) {
  const std::string best = directory_ + "/best.json";
  if (!options_.best_metric_path.empty() && fs_->exists(best)) {
    try {
      const json j = json::parse(fs_->read_file(best));
      if (j.value("metric", "") == options_.best_metric_path) {
        best_step_ = json_int(j.at("step"), "best.json's step");
        best_value_ = j.at("value").get<double>();
      }
    } catch (const json::exception&) {
      // A damaged best.json only loses the record of the best step; it is rewritten later.
    } catch (const CorruptionError&) {
      // The same for a step that is not an integer.
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
  for (const auto& [device, state] : random_states(generator_devices()).items()) {
    rng.push_back({device, tensors.add(state.tensor())});
  }
  meta["rng"] = rng;

  // Each file as the buffers it is written from: the tensors' bytes in their own memory.
  const SafetensorsParts tensor_parts = tensors.parts();
  const std::string meta_text = meta.dump(1);
  const std::vector<std::pair<std::string, std::vector<std::string_view>>> files = {
      {kTensorFile, tensor_parts.views()}, {"meta.json", {meta_text}}, {"config.yaml", {s.config_yaml}}};
  json manifest;
  manifest["step"] = s.step;
  for (const auto& [name, parts] : files) {
    std::size_t size = 0;
    for (const auto& part : parts) size += part.size();
    manifest["files"][name] = {{"size", size}, {"xxh3_64", checksum(parts)}};
  }

  const std::string final_path = directory_ + "/" + kPrefix + std::to_string(s.step);
  const std::string tmp = directory_ + "/tmp." + kPrefix + std::to_string(s.step) + "." + std::to_string(::getpid());
  fs_->create_directories(directory_);
  try {
    fs_->remove_all(tmp);
    fs_->create_directories(tmp);
    for (const auto& [name, parts] : files) fs_->write_file_parts(tmp + "/" + name, parts);
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

namespace {

// Gives the live tensors of `group` (the model's parameters or buffers, `live`) the checkpoint's
// values of the same names (`entries`: meta.json's [name, tensor] list): every name, shape and
// dtype must match, kd::CorruptionError naming the first that does not.
void adopt_named(const json& entries, const torch::OrderedDict<std::string, torch::Tensor>& live, const char* group,
                 TensorReader& tensors, const std::string& path) {
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
    const torch::Tensor saved = tensors.view((*found)[1]);
    if (saved.sizes() != item.value().sizes() || saved.scalar_type() != item.value().scalar_type() ||
        saved.layout() != item.value().layout()) {
      throw MismatchError(path + ": " + group + "." + item.key() + " is " + describe_tensor(saved) +
                          " in the checkpoint but " + describe_tensor(item.value()) + " in the model");
    }
    // The checkpoint's memory becomes the tensor's (no copy) where it can; `saved` is
    // nobody else's (a view into the bytes read, which nothing else keeps).
    if (saved.device() == item.value().device() && saved.is_contiguous()) {
      item.value().set_data(saved);
    } else {
      item.value().copy_(saved);
    }
  }
  if (!missing.empty() || entries.size() != live.size()) {
    throw MismatchError(path + ": the checkpoint's " + group + " do not match the model (" +
                        std::to_string(entries.size()) + " saved, " + std::to_string(live.size()) + " in the model" +
                        (missing.empty() ? "" : ", missing " + missing.front()) + ")");
  }
}

// The EMA of the params (`ema`, the model's tree of them) takes the checkpoint's values.
void restore_ema(const Tree& saved_ema, const Tree& ema, const std::string& path) {
  const auto live = ema.flatten(), saved = saved_ema.flatten();
  if (live.size() != saved.size()) throw MismatchError(path + ": the checkpoint's EMA params do not match the model");
  for (std::size_t i = 0; i < live.size(); ++i) {
    const Tree& from = saved[i].second;
    const torch::Tensor& to = live[i].second.tensor();
    if (live[i].first != saved[i].first || !from.is_tensor() || from.tensor().sizes() != to.sizes() ||
        from.tensor().scalar_type() != to.scalar_type()) {
      throw MismatchError(path + ": the checkpoint's EMA of " + live[i].first + " does not match the model");
    }
    to.copy_(from.tensor());
  }
}

}  // namespace

void Checkpointer::restore(const std::string& path, Snapshot& s) const {
  CheckpointContents contents;  // every file read once, checked, then parsed from memory
  const std::string problem = verify_checkpoint(*fs_, path, &contents);
  if (!problem.empty()) throw CorruptionError("checkpoint \"" + path + "\" is damaged: " + problem);
  json meta;
  try {
    meta = json::parse(contents.files.at("meta.json"));
  } catch (const json::exception& e) {
    throw CorruptionError(path + "/meta.json: " + e.what());
  }
  TensorReader tensors(contents, path);
  torch::NoGradGuard no_grad;
  try {
    check_meta(meta, path);
    if (s.optimizer) {
      check_optimizer_type(meta, *s.optimizer, path,
                           "start the new optimizer from these parameters in another workdir with "
                           "init_transform: {checkpoint: " +
                               std::filesystem::path(path).parent_path().parent_path().string() + "}");
    }
    if (s.model) {
      adopt_named(meta.at("params"), s.model->named_parameters(true), "params", tensors, path);
      adopt_named(meta.at("collections"), s.model->named_buffers(true), "collections", tensors, path);
    }
    if (s.optimizer) {
      if (!s.model) throw Error("restoring an optimizer's state needs its model (Snapshot::model)");
      // Adopted as they are (views into the bytes read; no copy) where on the parameters' device.
      optim::load_optimizer_state(*s.optimizer, *s.model, tensors.view_tree(meta.at("optimizer")),
                                  /*adopt=*/true);
    }
    const Tree ema = tensors.view_tree(meta.at("ema"));  // copied into s.ema's tensors
    if (!s.ema.is_none()) restore_ema(ema, s.ema, path);
    s.aux = tensors.get_tree(meta.at("aux"));
    if (!meta.contains("loss_states") && s.aux.find("loss_states")) {
      // Saved by a kd whose loss states counted steps, not examples: merged with today's they
      // would give a wrong average, so the interval's losses restart here.
      s.aux.erase("loss_states");
    }
    s.aux_steps = json_int(meta.at("aux_steps"), path + "/meta.json's aux_steps");
    s.step = json_int(meta.at("step"), path + "/meta.json's step");
    s.data = {json_int(meta.at("data").at("epoch"), path + "/meta.json's data epoch"),
              json_int(meta.at("data").at("index"), path + "/meta.json's data index")};
    Tree rng = Tree::dict();
    for (const auto& entry : meta.at("rng")) rng.insert(entry.at(0).get<std::string>(), tensors.get(entry.at(1)));
    set_random_states(rng);
    s.config_yaml = contents.files.at("config.yaml");
  } catch (const json::exception& e) {
    throw CorruptionError(path + "/meta.json is not a kd checkpoint description: " + e.what());
  } catch (const c10::Error& e) {
    throw CorruptionError(path + ": " + e.msg().substr(0, e.msg().find('\n')));
  }
}

bool Checkpointer::track_best(int64_t step, const std::string& collection,
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
  io::write_file_atomically(*fs_, directory_ + "/best.json", j.dump());
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
    if (keep) continue;
    // Out of a reader's sight at once (a rename), then deleted: a reader beside the run sees the
    // whole checkpoint or none of it (clean_up_interrupted_saves removes what a crash leaves).
    const std::string doomed =
        directory_ + "/tmp.pruned." + kPrefix + std::to_string(step) + "." + std::to_string(::getpid());
    fs_->remove_all(doomed);  // what an earlier prune of this process left, if anything
    fs_->rename(directory_ + "/" + kPrefix + std::to_string(step), doomed);
    fs_->remove_all(doomed);
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

}  // namespace kd::checkpoints
