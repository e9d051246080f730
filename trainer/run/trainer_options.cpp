#include "trainer/run/trainer_options.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <torch/cuda.h>

#include "trainer/common/error.h"

namespace kd::train {
namespace {

#ifdef KD_WITH_CUDA  // trainer/CMakeLists.txt: LibTorch's CMake config has CUDA
constexpr bool kBuiltWithCuda = true;
#else
constexpr bool kBuiltWithCuda = false;
#endif

c10::Device parse_device(const config::Node& cfg, const c10::Device& default_device) {
  const std::string name = cfg.get_string("device", default_device.str());
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    throw ConfigError(cfg.child("device").where() + ": device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + name +
                      "\"");
  }
  if (device.is_cuda()) {
    if (!kBuiltWithCuda) {
      throw ConfigError(cfg.child("device").where() + ": device \"" + name +
                        "\" requested, but kd was built against a LibTorch without CUDA (Debian's libtorch-dev is "
                        "CPU-only; README: \"Building against another LibTorch\"); use device: cpu");
    }
    if (torch::cuda::device_count() == 0) {
      const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
      throw ConfigError(cfg.child("device").where() + ": device \"" + name +
                        "\" requested; this LibTorch has CUDA but sees no GPU (" +
                        (visible ? "CUDA_VISIBLE_DEVICES is \"" + std::string(visible) + "\""
                                 : std::string("no NVIDIA GPU or driver on this machine")) +
                        "); use device: cpu");
    }
    if (device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count())) {
      throw ConfigError(cfg.child("device").where() + ": device \"" + name + "\" does not exist (" +
                        std::to_string(torch::cuda::device_count()) + " GPUs visible)");
    }
  } else if (!device.is_cpu()) {
    throw ConfigError(cfg.child("device").where() + ": device must be \"cpu\" or \"cuda[:N]\", got \"" + name + "\"");
  }
  return device;
}

}  // namespace

TrainerOptions TrainerOptions::from_config(const config::Node& cfg) {
  const TrainerOptions defaults;
  TrainerOptions o;
  o.seed = cfg.get_int_in("seed", defaults.seed, 0, std::numeric_limits<int64_t>::max());
  o.workdir = cfg.get_string("workdir");
  if (auto n = cfg.find("num_train_steps"); n && !n->is_null()) {
    o.num_train_steps = cfg.get_int("num_train_steps");
    if (o.num_train_steps <= 0) throw ConfigError(n->where() + ": num_train_steps must be > 0");
  }
  o.stop_after_steps =
      cfg.get_int_in("stop_after_steps", defaults.stop_after_steps, 0, std::numeric_limits<int64_t>::max());
  if (auto t = cfg.find("stop_after_time"); t && !t->is_null()) {
    o.stop_after_seconds = parse_duration(t->as_string(), t->where() + ": stop_after_time");
  }
  o.log_metrics_every = cfg.get_int("log_metrics_every", defaults.log_metrics_every);
  if (o.log_metrics_every <= 0) {
    throw ConfigError(cfg.child("log_metrics_every").where() + ": log_metrics_every must be > 0");
  }
  o.device = parse_device(cfg, defaults.device);
  o.precision = parse_precision(cfg, o.device);
  o.grad_scaler = GradScalerOptions::from_config(cfg.section("grad_scaler"));
  o.distributed = distributed::Options::from_config(cfg.section("distributed"));
  o.checkpointer = checkpoints::CheckpointerOptions::from_config(cfg.section("checkpointer"));
  o.allow_config_change = cfg.get_bool("allow_config_change", defaults.allow_config_change);
  if (auto n = cfg.find("init_transform"); n && !n->is_null()) o.init_transform = *n;
  o.log_summaries_every = cfg.get_int("log_summaries_every", o.log_metrics_every);
  if (o.log_summaries_every <= 0) {
    throw ConfigError(cfg.child("log_summaries_every").where() + ": log_summaries_every must be > 0");
  }
  o.nan_policy = parse_nan_policy(cfg);
  if (auto n = cfg.find("requeue_signal"); n && !n->is_null()) {
    const std::string name = n->as_string();
    if (name == "USR1" || name == "SIGUSR1") {
      o.requeue_signal = SIGUSR1;
    } else if (name == "USR2" || name == "SIGUSR2") {
      o.requeue_signal = SIGUSR2;
    } else if (name == "none") {
      o.requeue_signal = 0;
    } else {
      throw ConfigError(n->where() + ": requeue_signal must be USR1, USR2 or none, got \"" + name + "\"");
    }
  }
  o.writer = writers::WriterOptions::from_config(cfg.section("writer"));
  if (auto n = cfg.find("num_threads"); n && !n->is_null() && n->as_string() != "auto") {
    // More threads than a few per core only contend (and tens of thousands never start).
    const int64_t most = 4 * std::max<int64_t>(1, std::thread::hardware_concurrency());
    o.num_threads = n->as_int();
    if (*o.num_threads <= 0 || *o.num_threads > most) {
      throw ConfigError(n->where() + ": num_threads must be auto or in [1, " + std::to_string(most) +
                        "] (4 per core of " + "this machine), got " + std::to_string(*o.num_threads));
    }
  }
  return o;
}

double parse_duration(const std::string& text, const std::string& where) {
  const auto bad = [&] {
    return ConfigError(where + ": \"" + text +
                       "\" is not a duration; write HH:MM:SS (e.g. 23:30:00), D-HH:MM:SS (e.g. 1-12:00:00) or "
                       "seconds");
  };
  std::string rest = text;
  double days = 0;
  if (const auto dash = rest.find('-'); dash != std::string::npos) {
    const std::string d = rest.substr(0, dash);
    if (d.empty() || d.find_first_not_of("0123456789") != std::string::npos || d.size() > 6) throw bad();
    days = std::stod(d);
    rest = rest.substr(dash + 1);
  }
  std::vector<std::string> fields;
  for (std::size_t start = 0;;) {
    const auto colon = rest.find(':', start);
    fields.push_back(rest.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (fields.size() > 3 || (days > 0 && fields.size() != 3)) throw bad();
  double seconds = 0;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const std::string& f = fields[i];
    // A plain number of seconds may have a fraction; the fields of H:MM:SS are whole numbers.
    const std::string digits = fields.size() == 1 ? "0123456789." : "0123456789";
    if (f.empty() || f.size() > 9 || f.find_first_not_of(digits) != std::string::npos ||
        std::count(f.begin(), f.end(), '.') > 1 || f == ".")
      throw bad();
    const double v = std::stod(f);
    if (i > 0 && v >= 60) throw bad();  // minutes and seconds below 60
    seconds = seconds * 60 + v;
  }
  return days * 86400 + seconds;
}

bool may_change_on_resume(const std::string& key) {
  for (const char* prefix : {"workdir",
                             "num_train_steps",
                             "stop_after_steps",
                             "stop_after_time",
                             "log_metrics_every",
                             "log_summaries_every",
                             "evals",
                             "writer",
                             "callbacks",
                             "profiler",
                             "checkpointer",
                             "allow_config_change",
                             "nan_policy",
                             "num_threads",
                             "device",
                             "init_transform",
                             "distributed",
                             "references",  // the values they resolve to are compared
                             "requeue_signal",
                             "optimizer.accumulate_steps",
                             "train_ds.prefetch",
                             "train_ds.num_workers"}) {  // workers change when batches are made, never which
    const std::string p(prefix);
    if (key == p || key.rfind(p + ".", 0) == 0) return true;
  }
  return false;
}

}  // namespace kd::train
