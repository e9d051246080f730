#include "trainer/train/trainer.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/data/pipeline.h"
#include "trainer/evals/evaluator.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer.h"
#include "trainer/train/train_step.h"

namespace kd::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Models with fewer parameters than this run faster on one thread: the per-op threading
// overhead outweighs the work (measured: a tiny MLP 1.6x slower on 2 threads, the 784-512-256
// MLP 1.7x faster).
constexpr int64_t kParamsForAllThreads = 100'000;

c10::Device parse_device(const config::Node& cfg) {
  const std::string name = cfg.get_string("device", "cpu");
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    throw ConfigError(cfg.child("device").where() + ": device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + name + "\"");
  }
  if (device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      throw ConfigError(cfg.child("device").where() + ": device \"" + name +
                        "\" requested, but this LibTorch has no CUDA or sees no GPU; use device: cpu");
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

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

}  // namespace

config::Registry<Callback>& callback_registry() {
  static auto* registry = new config::Registry<Callback>("callback");
  return *registry;
}

Trainer::Trainer(const config::Node& cfg) : experiment_(cfg) {
  auto console = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto early = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10'000);
  log_ = std::make_shared<spdlog::logger>("kd", spdlog::sinks_init_list{console, early});
  log_->set_pattern("%Y-%m-%d %H:%M:%S %v");

  seed_ = cfg.get_int("seed", 0);
  workdir_ = cfg.get_string("workdir");
  num_train_steps_ = cfg.get_int("num_train_steps");
  stop_after_steps_ = cfg.get_int("stop_after_steps", 0);
  log_metrics_every_ = cfg.get_int("log_metrics_every", 100);
  if (num_train_steps_ <= 0) throw ConfigError(cfg.child("num_train_steps").where() + ": num_train_steps must be > 0");
  if (log_metrics_every_ <= 0) throw ConfigError(cfg.child("log_metrics_every").where() + ": log_metrics_every must be > 0");
  device_ = parse_device(cfg);
  for (const char* later : {"checkpointer", "init_transform"}) {
    if (auto n = cfg.find(later); n && !n->is_null()) {
      throw NotSupportedError(n->where() + ": \"" + later + "\" is not supported by this version of kd (checkpoints "
                              "are not written yet); remove the key");
    }
  }
  if (auto n = cfg.find("log_summaries_every"); n && !n->is_null()) n->as_int();

  torch::manual_seed(static_cast<uint64_t>(seed_));
  model_ = models::registry().create(cfg.child("model"));
  model_->to(device_);

  const auto losses = cfg.find("train_losses");
  if (!losses || losses->is_null() || losses->size() == 0) {
    throw ConfigError(cfg.where() + ": the experiment needs train_losses (e.g. {xent: {type: SoftmaxCrossEntropyWithIntLabels}})");
  }
  const auto metrics = cfg.find("train_metrics");
  const auto summaries = cfg.find("train_summaries");
  auxiliaries_ = std::make_shared<Auxiliaries>(
      build_auxiliaries(&*losses, metrics ? &*metrics : nullptr, summaries ? &*summaries : nullptr));
  if (!auxiliaries_->summaries.empty()) {
    log_->warn("train_summaries are computed, but this version has no writer that records images, "
               "histograms or texts (they are not written)");
  }

  pipeline_ = std::make_unique<data::Pipeline>(cfg.child("train_ds"), seed_);
  step_ = std::make_unique<TrainStep>(model_, cfg.child("optimizer"), auxiliaries_);

  if (auto s = cfg.find("schedules"); s && !s->is_null()) {
    for (const auto& name : s->keys()) schedules_.emplace_back(name, optim::make_schedule(s->child(name)));
  }
  if (auto e = cfg.find("evals"); e && !e->is_null()) {
    for (const auto& name : e->keys()) {
      evaluators_.push_back(std::make_unique<evals::Evaluator>(name, e->child(name), seed_, auxiliaries_));
    }
  }
  if (auto w = cfg.find("writer"); w && !w->is_null()) {
    write_jsonl_ = w->get_bool("jsonl", true);
    w->check_unknown_keys();
  }
  if (auto c = cfg.find("callbacks"); c && !c->is_null()) {
    for (const auto& name : c->keys()) callbacks_.push_back(callback_registry().create(c->child(name)));
  }

  int64_t params = 0;
  for (const auto& p : model_->parameters()) params += p.numel();
  if (auto n = cfg.find("num_threads"); n && !n->is_null() && n->as_string() != "auto") {
    num_threads_ = n->as_int();
    if (num_threads_ <= 0) throw ConfigError(n->where() + ": num_threads must be > 0 or auto");
  } else {
    num_threads_ = params >= kParamsForAllThreads ? std::max<int64_t>(1, std::thread::hardware_concurrency()) : 1;
  }
  cfg.check_unknown_keys();

  state_ = step_->init();
  progress_ = isatty(STDERR_FILENO) != 0;
  log_->info("experiment: {} parameters, device {}, {} intra-op thread{}{}", params, device_.str(), num_threads_,
             num_threads_ == 1 ? "" : "s", cfg.find("num_threads") ? "" : " (auto)");
  log_->info("train data: {}", pipeline_->description());
}

Trainer::~Trainer() = default;

void Trainer::open_workdir() {
  fs::create_directories(workdir_);
  const std::string config_path = workdir_ + "/config.yaml";
  {
    const std::string tmp = config_path + ".tmp";
    std::ofstream out(tmp);
    out << "# The resolved experiment; run it again with: kd train --cfg=" << config_path << "\n"
        << experiment_.to_yaml() << "\n";
    out.close();
    if (!out) throw IOError("cannot write \"" + tmp + "\"");
    fs::rename(tmp, config_path);
  }
  {
    std::ofstream log_file(workdir_ + "/log.txt", std::ios::app);
    auto& sinks = log_->sinks();
    auto* early = dynamic_cast<spdlog::sinks::ringbuffer_sink_mt*>(sinks.back().get());
    if (early) {
      for (const auto& line : early->last_formatted()) log_file << line;
      sinks.pop_back();
    }
  }
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(workdir_ + "/log.txt");
  file->set_pattern("%Y-%m-%d %H:%M:%S %v");
  log_->sinks().push_back(file);
  if (write_jsonl_) writers_.push_back(std::make_unique<writers::JsonlWriter>(workdir_ + "/metrics.jsonl"));
  log_->info("workdir: {}", workdir_);
}

void Trainer::train() {
  // Until resumption exists, a workdir that holds a run is never written over.
  for (const char* file : {"metrics.jsonl", "config.yaml"}) {
    if (fs::exists(fs::path(workdir_) / file)) {
      throw ConfigError("the workdir \"" + workdir_ + "\" already holds a run (" + file +
                        "); this version cannot resume it. Choose another workdir, e.g. --cfg.workdir=" + workdir_ + "_2");
    }
  }
  torch::set_num_threads(static_cast<int>(num_threads_));
  const int64_t last_step = stop_after_steps_ > 0 ? std::min(stop_after_steps_, num_train_steps_) : num_train_steps_;
  for (auto& cb : callbacks_) cb->on_train_start(*this);

  AuxiliariesState merged;
  start_ = Clock::now();
  auto interval_start = Clock::now();
  double wait_at_interval_start = pipeline_->wait_seconds();
  int64_t interval_steps = 0;
  while (state_.step < last_step) {
    std::optional<Tree> batch = pipeline_->next();
    if (!batch) {
      log_->info("the training data ended (num_epochs) at step {}", state_.step);
      break;
    }
    if (!device_.is_cpu()) {
      *batch = batch->map([&](const torch::Tensor& t) { return t.to(device_, /*non_blocking=*/true); });
    }
    auto [next, aux] = step_->step(state_, *batch);
    state_ = std::move(next);
    merged = merged.merge(aux);
    ++interval_steps;
    if (writers_.empty() && write_jsonl_ && state_.step == 1) open_workdir();  // the first step worked

    const writers::Scalars* logged = nullptr;
    writers::Scalars values;
    if (state_.step % log_metrics_every_ == 0 || state_.step == last_step) {
      const double seconds = std::chrono::duration<double>(Clock::now() - interval_start).count();
      values = log_train_metrics(merged, seconds, interval_steps, pipeline_->wait_seconds() - wait_at_interval_start);
      logged = &values;
      merged = AuxiliariesState();
      interval_steps = 0;
      interval_start = Clock::now();
      wait_at_interval_start = pipeline_->wait_seconds();
    }
    for (auto& cb : callbacks_) cb->on_step_end(*this, state_.step, logged);
    run_evals(state_.step == num_train_steps_);
    if (progress_ && state_.step % 10 == 0) show_progress(values.empty() ? -1 : values.front().second);
  }
  if (writers_.empty() && write_jsonl_) open_workdir();
  if (progress_) std::fprintf(stderr, "\r\033[K");
  for (auto& w : writers_) w->flush();
  for (auto& cb : callbacks_) cb->on_train_end(*this, state_.step);
  log_->info("done: step {} of {} in {}", state_.step, num_train_steps_,
             format_duration(std::chrono::duration<double>(Clock::now() - start_).count()));
  log_->flush();
}

writers::Scalars Trainer::log_train_metrics(const AuxiliariesState& merged, double seconds, int64_t steps,
                                            double data_wait) {
  writers::Scalars values = merged.compute_scalars();
  for (const auto& [name, value] : step_->optimizer().schedules(state_.step - 1)) values.emplace_back("schedules/" + name, value);
  for (const auto& [name, schedule] : schedules_) values.emplace_back("schedules/" + name, (*schedule)(state_.step - 1));
  const double steps_per_sec = steps / std::max(seconds, 1e-9);
  values.emplace_back("perf_stats/steps_per_sec", steps_per_sec);
  values.emplace_back("perf_stats/examples_per_sec", steps_per_sec * static_cast<double>(pipeline_->options().batch_size));
  values.emplace_back("perf_stats/step_time_ms", 1e3 / steps_per_sec);
  values.emplace_back("perf_stats/data_wait_fraction", data_wait / std::max(seconds, 1e-9));
  for (auto& w : writers_) w->write_scalars(state_.step, "train", values);

  std::string line;
  for (const auto& [name, value] : values) {
    if (name.rfind("perf_stats/", 0) == 0 && name != "perf_stats/steps_per_sec") continue;
    line += fmt::format("  {} {:.4g}", name, value);
  }
  if (progress_) std::fprintf(stderr, "\r\033[K");
  log_->info("step {}{}", state_.step, line);
  return values;
}

void Trainer::run_evals(bool last) {
  for (auto& evaluator : evaluators_) {
    if (!evaluator->should_run(state_.step, last)) continue;
    const auto start = Clock::now();
    const AuxiliariesState result = evaluator->evaluate(*step_, state_, device_);
    writers::Scalars values = result.compute_scalars();
    values.emplace_back("perf_stats/eval_time_sec", std::chrono::duration<double>(Clock::now() - start).count());
    for (auto& w : writers_) w->write_scalars(state_.step, evaluator->name(), values);
    std::string line;
    for (const auto& [name, value] : values) line += fmt::format("  {} {:.4g}", name, value);
    if (progress_) std::fprintf(stderr, "\r\033[K");
    log_->info("eval {} at step {}{}", evaluator->name(), state_.step, line);
    for (auto& cb : callbacks_) cb->on_eval_end(*this, evaluator->name(), state_.step, values);
  }
}

void Trainer::show_progress(double loss) {
  static double last_loss = -1;
  if (loss >= 0) last_loss = loss;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  const double rate = state_.step / std::max(elapsed, 1e-9);
  const double remaining = (num_train_steps_ - state_.step) / std::max(rate, 1e-9);
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * state_.step / num_train_steps_);
  std::string bar(static_cast<std::size_t>(filled), '=');
  if (filled < kWidth) bar += '>' + std::string(static_cast<std::size_t>(kWidth - filled - 1), ' ');
  std::fprintf(stderr, "\r\033[K[%s] %ld/%ld  %.1f steps/s  ETA %s%s", bar.c_str(), state_.step, num_train_steps_, rate,
               format_duration(remaining).c_str(), last_loss >= 0 ? fmt::format("  loss {:.4f}", last_loss).c_str() : "");
  std::fflush(stderr);
}

Context Trainer::inspect() {
  std::optional<Tree> batch = pipeline_->next();
  if (!batch) throw Error("the training data is empty");
  if (!device_.is_cpu()) *batch = batch->map([&](const torch::Tensor& t) { return t.to(device_); });
  Context ctx;
  step_->step(state_, *batch, &ctx);
  return ctx;
}

std::string Trainer::describe_model() const {
  std::string out;
  int64_t total = 0;
  for (const auto& item : model_->named_parameters(/*recurse=*/true)) {
    out += fmt::format("  params.{:<40} {:<20} {:>10}\n", item.key(), describe_tensor(item.value()), item.value().numel());
    total += item.value().numel();
  }
  for (const auto& item : model_->named_buffers(/*recurse=*/true)) {
    out += fmt::format("  collections.{:<35} {:<20}\n", item.key(), describe_tensor(item.value()));
  }
  return out + fmt::format("  total: {} parameters\n", total);
}

}  // namespace kd::train
