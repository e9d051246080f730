// kd predict: a checkpoint's model over a dataset, the chosen Context paths written as .npy
// arrays or JSON lines (Trainer::predict).
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/common/tensor_text.h"
#include "trainer/data/pipeline.h"
#include "trainer/optim/optimizer.h"
#include "trainer/run/data_parallel_internal.h"
#include "trainer/run/trainer.h"
#include "trainer/run/trainer_options.h"
#include "trainer/step/train_step.h"

namespace kd::train {
namespace {

namespace fs = std::filesystem;

// Bytes reserved for a .npy header (magic, version, length and the dict padded with spaces),
// written first with the shape unknown and rewritten in place at the end.
constexpr std::size_t kNpyHeaderBytes = 256;

// NumPy's descr of a dtype kd writes as it is (bfloat16 is written as float32).
std::string npy_descr(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return "<f4";
    case torch::kDouble:
      return "<f8";
    case torch::kHalf:
      return "<f2";
    case torch::kLong:
      return "<i8";
    case torch::kInt:
      return "<i4";
    case torch::kShort:
      return "<i2";
    case torch::kChar:
      return "|i1";
    case torch::kByte:
      return "|u1";
    case torch::kBool:
      return "|b1";
    default:
      return "";
  }
}

std::string npy_header(const std::string& descr, const std::vector<int64_t>& shape) {
  std::string dims;
  for (std::size_t i = 0; i < shape.size(); ++i)
    dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const std::size_t fixed = 10;  // magic (6), version (2), header length (2)
  if (fixed + dict.size() + 1 > kNpyHeaderBytes)
    throw Error("kd predict: an array of " + std::to_string(shape.size()) + " dimensions has too long a .npy header");
  dict += std::string(kNpyHeaderBytes - fixed - dict.size() - 1, ' ') + "\n";
  const auto length = static_cast<uint16_t>(dict.size());
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(length & 0xFF);
  out += static_cast<char>(length >> 8);
  return out + dict;
}

// Where predictions go: one .npy file per path, or one JSON line per example.
class PredictionFiles {
 public:
  PredictionFiles(std::string partial, bool jsonl) : partial_(std::move(partial)), jsonl_(jsonl) {
    if (jsonl_) {
      lines_.open(partial_, std::ios::binary | std::ios::trunc);
      if (!lines_) throw IOError("cannot write \"" + partial_ + "\": " + std::strerror(errno));
    } else {
      fs::create_directories(partial_);
    }
  }

  // One batch: leaves (name, tensor [B, ...]) in the order of the first batch.
  void write(const std::vector<std::pair<std::string, torch::Tensor>>& leaves) {
    if (names_.empty()) {
      for (const auto& [name, t] : leaves) names_.push_back(name);
      if (!jsonl_) open_arrays(leaves);
    }
    std::vector<std::string> got;
    for (const auto& [name, t] : leaves) got.push_back(name);
    if (got != names_) {
      throw Error("kd predict: a batch gave the paths " + join(got) + " where the first gave " + join(names_) +
                  "; choose paths every batch has (--keys)");
    }
    const int64_t batch = leaves.front().second.size(0);
    for (const auto& [name, t] : leaves) {
      if (t.size(0) != batch) {
        throw Error("kd predict: \"" + name + "\" has " + std::to_string(t.size(0)) + " rows where \"" +
                    leaves.front().first + "\" has " + std::to_string(batch) +
                    "; every path written must hold one row per example");
      }
    }
    if (jsonl_) {
      for (int64_t i = 0; i < batch; ++i) {
        nlohmann::json line = {{"index", examples_ + i}};
        for (const auto& [name, t] : leaves) line[name] = to_json(t[i]);
        lines_ << line.dump() << "\n";
      }
      if (!lines_) throw IOError("cannot write \"" + partial_ + "\": " + std::strerror(errno));
    } else {
      for (std::size_t k = 0; k < leaves.size(); ++k) {
        Array& a = arrays_[k];
        torch::Tensor t = leaves[k].second;
        if (t.sizes().slice(1) != torch::IntArrayRef(a.row_shape)) {
          throw Error("kd predict: \"" + leaves[k].first + "\" is " + describe_tensor(t) +
                      " in this batch and had other per-example dimensions before; .npy needs one shape (write "
                      "--out=FILE.jsonl for examples of different shapes)");
        }
        t = t.to(a.dtype).contiguous();
        a.file.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
        if (!a.file) throw IOError("cannot write \"" + a.path + "\": " + std::strerror(errno));
      }
    }
    examples_ += batch;
  }

  // Completes the files (each array's header gets its number of rows); returns the examples written.
  int64_t finish() {
    if (jsonl_) {
      lines_.close();
      if (!lines_) throw IOError("cannot write \"" + partial_ + "\": " + std::strerror(errno));
      return examples_;
    }
    for (Array& a : arrays_) {
      std::vector<int64_t> shape = {examples_};
      shape.insert(shape.end(), a.row_shape.begin(), a.row_shape.end());
      a.file.seekp(0);
      const std::string header = npy_header(npy_descr(a.dtype), shape);
      a.file.write(header.data(), static_cast<std::streamsize>(header.size()));
      a.file.close();
      if (!a.file) throw IOError("cannot write \"" + a.path + "\": " + std::strerror(errno));
    }
    return examples_;
  }

  const std::vector<std::string>& names() const { return names_; }

 private:
  struct Array {
    std::string path;
    std::ofstream file;
    torch::ScalarType dtype;
    std::vector<int64_t> row_shape;
  };

  void open_arrays(const std::vector<std::pair<std::string, torch::Tensor>>& leaves) {
    for (const auto& [name, t] : leaves) {
      Array a;
      a.path = partial_ + "/" + name + ".npy";
      a.dtype = t.scalar_type() == torch::kBFloat16 ? torch::kFloat : t.scalar_type();
      if (npy_descr(a.dtype).empty()) {
        throw Error("kd predict: \"" + name + "\" is " + describe_tensor(t) + ", which .npy files of kd do not hold");
      }
      a.row_shape = t.sizes().slice(1).vec();
      a.file.open(a.path, std::ios::binary | std::ios::trunc);
      const std::string header = npy_header(npy_descr(a.dtype), {0});  // rewritten by finish()
      a.file.write(header.data(), static_cast<std::streamsize>(header.size()));
      if (!a.file) throw IOError("cannot write \"" + a.path + "\": " + std::strerror(errno));
      arrays_.push_back(std::move(a));
    }
  }

  static nlohmann::json to_json(const torch::Tensor& t) {
    if (t.dim() > 0) {
      nlohmann::json out = nlohmann::json::array();
      for (int64_t i = 0; i < t.size(0); ++i) out.push_back(to_json(t[i]));
      return out;
    }
    if (t.scalar_type() == torch::kBool) return t.item<bool>();
    if (t.is_floating_point()) return t.item<double>();
    return t.item<int64_t>();
  }

  static std::string join(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return "(" + out + ")";
  }

  std::string partial_;
  bool jsonl_;
  std::ofstream lines_;
  std::vector<Array> arrays_;
  std::vector<std::string> names_;
  int64_t examples_ = 0;
};

// The leaves of `ctx` that `keys` choose, named by their paths, each [B, ...] on the CPU.
std::vector<std::pair<std::string, torch::Tensor>> chosen_leaves(const Context& ctx, const std::vector<Path>& keys,
                                                                 const std::vector<std::string>& texts) {
  const Tree tree = ctx.to_tree();
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (std::size_t k = 0; k < keys.size(); ++k) {
    std::vector<std::pair<Path, Tree>> matches;
    try {
      matches = tree.glob(keys[k]);
    } catch (Error& e) {
      e.add_context("kd predict: --keys \"" + texts[k] + "\"");
      throw;
    }
    std::size_t before = out.size();
    for (const auto& [path, node] : matches) {
      for (const auto& [leaf_path, leaf] : node.flatten_paths(path)) {
        if (!leaf.is_tensor()) continue;
        const torch::Tensor& t = leaf.tensor();
        if (t.dim() == 0) {
          throw Error("kd predict: \"" + leaf_path.str() + "\" (--keys \"" + texts[k] +
                      "\") is a scalar, not one value per example; choose per-example paths such as preds.**");
        }
        const std::string name = leaf_path.str();
        if (std::none_of(out.begin(), out.end(), [&](const auto& e) { return e.first == name; })) {
          out.emplace_back(name, t.detach().cpu());
        }
      }
    }
    if (out.size() == before) {
      throw ConfigError("kd predict: --keys \"" + texts[k] +
                        "\" chooses no tensor of the Context (kd inspect lists its paths: preds.*, batch.*, "
                        "interms.*, ...)");
    }
  }
  return out;
}

}  // namespace

int64_t Trainer::predict(const PredictOptions& p) {
  if (world_size() > 1) throw ConfigError("kd predict runs in one process; start it without kd launch or torchrun");
  if (p.out.empty()) throw ConfigError("kd predict needs --out (a directory for .npy files, or FILE.jsonl)");
  const bool jsonl = p.out.size() > 6 && p.out.compare(p.out.size() - 6, 6, ".jsonl") == 0;
  std::error_code ec;
  if (fs::exists(p.out, ec) && !p.overwrite) {
    throw ConfigError("--out=" + p.out +
                      " already exists; add --overwrite to replace it (atomically), or choose another --out");
  }
  if (fs::exists(p.out, ec) && (fs::is_directory(p.out, ec) == jsonl)) {
    throw ConfigError("--out=" + p.out + " is " + (jsonl ? "a directory" : "a file") + "; --overwrite replaces " +
                      (jsonl ? "a .jsonl file" : "a directory of .npy files") + " only");
  }
  // A directory is replaced only when it is kd predict's output: never a folder of the user's.
  if (!jsonl && fs::exists(p.out, ec) && !fs::exists(fs::path(p.out) / "predict.json", ec)) {
    throw ConfigError("--out=" + p.out +
                      " is a directory that kd predict did not write (it has no predict.json); --overwrite replaces "
                      "only kd predict's output: choose another --out");
  }
  std::vector<Path> keys;
  for (const std::string& text : p.keys) {
    try {
      keys.push_back(Path::parse(text));
    } catch (Error& e) {
      e.add_context("--keys \"" + text + "\"");
      throw;
    }
    const std::string stage = text.substr(0, text.find_first_of(".["));
    if (stage != "batch" && stage != "preds" && stage != "interms") {
      throw ConfigError("kd predict: --keys \"" + text +
                        "\": kd predict writes values of each example: batch.*, preds.* and interms.* (the params "
                        "are in the checkpoint: kd export writes them)");
    }
  }

  // The data: an eval's ds, or train_ds, read whole in order.
  std::vector<std::string> evals;
  if (auto e = experiment_.find("evals"); e && e->is_map()) evals = e->keys();
  std::string ds = p.ds;
  if (ds.empty()) {
    if (evals.size() != 1) {
      std::string names;
      for (const auto& n : evals) names += (names.empty() ? ": " : ", ") + n;
      throw ConfigError("kd predict: give --ds=NAME, one of the experiment's " + std::to_string(evals.size()) +
                        " evals" + names + ", or --ds=train for train_ds");
    }
    ds = evals.front();
  }
  if (ds != "train" && std::find(evals.begin(), evals.end(), ds) == evals.end()) {
    std::vector<std::string> choices = evals;
    choices.push_back("train");
    const auto close = nearest(ds, choices, 1);
    throw ConfigError("kd predict: --ds=" + ds + " is neither an eval of the experiment nor train" +
                      (close.empty() ? "" : " (did you mean " + close.front() + "?)"));
  }
  const config::Node data =
      ds == "train" ? experiment_.child("train_ds") : experiment_.child("evals").child(ds).child("ds");
  data::PipelineOptions defaults;
  defaults.in_order = true;
  defaults.prefetch = 1;
  data::Pipeline pipeline(data, options_->seed, defaults);

  restore_for_evaluation(p.step);
  std::optional<optim::Optimizer::EmaParamsGuard> ema;
  if (p.use_ema) {
    if (!step_->optimizer().has_ema()) {
      throw ConfigError(
          "kd predict --use_ema: the run keeps no EMA of the params (set optimizer.ema_decay to train one)");
    }
    ema.emplace(step_->optimizer());
  }
  const bool record =
      std::any_of(p.keys.begin(), p.keys.end(), [](const std::string& k) { return k.rfind("interms", 0) == 0; });

  // Written beside --out, then renamed into place.
  const fs::path out = fs::absolute(p.out);
  if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
  const std::string partial = out.string() + ".partial-" + std::to_string(::getpid());
  fs::remove_all(partial, ec);
  int64_t examples = 0;
  try {
    PredictionFiles files(partial, jsonl);
    while (std::optional<Tree> batch = pipeline.next()) {
      const Context ctx = step_->predict_step(state_, data::to_device(*batch, options_->device), record);
      const auto leaves = chosen_leaves(ctx, keys, p.keys);
      const int64_t n = data::num_examples(*batch, "the batch");
      for (const auto& [name, t] : leaves) {
        if (t.size(0) != n) {
          throw Error("kd predict: \"" + name + "\" is " + describe_tensor(t) +
                      ", not one row for each of the batch's " + std::to_string(n) +
                      " examples; choose per-example paths with --keys");
        }
      }
      files.write(leaves);
    }
    examples = files.finish();
    if (!jsonl) {
      nlohmann::json meta = {{"step", state_.step},  {"ds", ds},
                             {"examples", examples}, {"paths", files.names()},
                             {"use_ema", p.use_ema}, {"workdir", workdir()}};
      std::ofstream(partial + "/predict.json") << meta.dump(2) << "\n";
    }
    if (fs::exists(out, ec)) {
      const std::string old = out.string() + ".old-" + std::to_string(::getpid());
      fs::rename(out, old);
      fs::rename(partial, out);
      fs::remove_all(old, ec);
    } else {
      fs::rename(partial, out);
    }
  } catch (...) {
    fs::remove_all(partial, ec);
    throw;
  }
  log_->info("predict: {} examples of {} with the {} of step {} -> {}", examples,
             ds == "train" ? "train_ds" : "evals." + ds + ".ds", p.use_ema ? "EMA of the params" : "params",
             state_.step, out.string());
  return state_.step;
}

}  // namespace kd::train
