#include "trainer/run/trainer.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <fstream>
#include <thread>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/init_transform.h"
#include "trainer/common/error.h"
#include "trainer/data/pipeline.h"
#include "trainer/distributed/distributed.h"
#include "trainer/evals/evaluator.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer.h"
#include "trainer/optim/optimizer_state.h"
#include "trainer/summaries/summary.h"
#include "trainer/context/error_context.h"
#include "trainer/step/train_step.h"

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

// Console lines carry no level (warnings and errors say so in words); log.txt lines do.
constexpr const char* kConsolePattern = "%Y-%m-%d %H:%M:%S %v";
constexpr const char* kFilePattern = "%Y-%m-%d %H:%M:%S [%l] %v";

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

// SIGINT/SIGTERM: the first one asks the loop to checkpoint and stop; a second one, a second
// or more later, exits now. (One within the second is the same request arriving twice, e.g.
// a scheduler signalling every process of a job while kd launch passes it on too.)
volatile sig_atomic_t g_stop_signal = 0;
// CLOCK_MONOTONIC nanoseconds of the first signal. A lock-free atomic is async-signal-safe.
std::atomic<int64_t> g_stop_time_ns{0};
static_assert(std::atomic<int64_t>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  const int64_t ns = static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
  if (g_stop_signal != 0) {
    if (ns - g_stop_time_ns.load() >= 1'000'000'000) _exit(128 + sig);
    return;
  }
  g_stop_time_ns.store(ns);
  g_stop_signal = sig;
}

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    // While an error propagates, a signal (e.g. a launcher stopping the other ranks after a
    // failure) must not kill the process before the error is reported: the handler stays, and
    // only a second signal exits.
    if (std::uncaught_exceptions() > 0) return;
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  int received() const { return g_stop_signal; }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// Keys that may change between a run and its resumption: how long and how it logs, and where
// and in how many pieces the same global batch is computed (ranks, accumulate_steps).
bool may_change_on_resume(const std::string& key) {
  for (const char* prefix : {"workdir", "num_train_steps", "stop_after_steps", "log_metrics_every", "log_summaries_every",
                             "evals", "writer", "callbacks", "checkpointer", "allow_config_change", "nan_policy",
                             "num_threads", "device", "init_transform", "distributed", "optimizer.accumulate_steps"}) {
    const std::string p(prefix);
    if (key == p || key.rfind(p + ".", 0) == 0) return true;
  }
  return false;
}

}  // namespace

config::Registry<Callback>& callback_registry() {
  static auto* registry = new config::Registry<Callback>("callback");
  return *registry;
}

Trainer::Trainer(const config::Node& cfg) : experiment_(cfg) {
  console_ = std::make_shared<ProgressConsole>(isatty(STDERR_FILENO) != 0);
  console_->set_pattern(kConsolePattern);
  // Lines logged before the workdir exists, written to its log.txt once it does.
  auto early = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10'000);
  early->set_pattern(kFilePattern);
  log_ = std::make_shared<spdlog::logger>("kd", spdlog::sinks_init_list{console_, early});
  // Every line of info or above reaches log.txt at once: a killed run keeps its whole log.
  log_->flush_on(spdlog::level::info);

  seed_ = cfg.get_int("seed", 0);
  workdir_ = cfg.get_string("workdir");
  if (auto n = cfg.find("num_train_steps"); n && !n->is_null()) num_train_steps_ = cfg.get_int("num_train_steps");
  stop_after_steps_ = cfg.get_int("stop_after_steps", 0);
  log_metrics_every_ = cfg.get_int("log_metrics_every", 100);
  if (auto n = cfg.find("num_train_steps"); n && !n->is_null() && num_train_steps_ <= 0) {
    throw ConfigError(cfg.child("num_train_steps").where() + ": num_train_steps must be > 0");
  }
  if (log_metrics_every_ <= 0) throw ConfigError(cfg.child("log_metrics_every").where() + ": log_metrics_every must be > 0");
  device_ = parse_device(cfg);
  if (auto world = distributed::world_from_environment(); world && world->world_size > 1) {
    world_ = std::make_unique<distributed::WorldInfo>(*world);
    if (!is_chief()) log_->set_level(spdlog::level::warn);  // rank 0 reports for the job
    if (device_.is_cuda() && !device_.has_index() && torch::cuda::device_count() > 1) {
      // `device: cuda` in a job: each rank its own GPU, LOCAL_RANK (a scheduler that shows each
      // rank only its own GPU leaves one: cuda:0).
      if (world_->local_rank >= static_cast<int>(torch::cuda::device_count())) {
        throw ConfigError(cfg.child("device").where() + ": rank " + std::to_string(world_->rank) + " has LOCAL_RANK " +
                          std::to_string(world_->local_rank) + " but this machine shows " +
                          std::to_string(torch::cuda::device_count()) + " GPUs; start at most one rank per GPU");
      }
      device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(world_->local_rank));
    }
  }
  const auto distributed_node = cfg.find("distributed");
  const auto distributed_options = distributed::Options::from_config(distributed_node ? &*distributed_node : nullptr);
  {
    const auto node = cfg.find("checkpointer");
    checkpointer_ = std::make_unique<checkpoints::Checkpointer>(
        workdir_ + "/checkpoints", checkpoints::CheckpointerOptions::from_config(node ? &*node : nullptr));
  }
  allow_config_change_ = cfg.get_bool("allow_config_change", false);
  if (auto n = cfg.find("init_transform"); n && !n->is_null()) init_transform_ = *n;
  log_summaries_every_ = cfg.get_int("log_summaries_every", log_metrics_every_);
  if (log_summaries_every_ <= 0) throw ConfigError(cfg.child("log_summaries_every").where() + ": log_summaries_every must be > 0");

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

  {
    data::PipelineOptions shard;
    shard.num_shards = world_size();
    shard.shard_index = rank();
    pipeline_ = std::make_unique<data::Pipeline>(cfg.child("train_ds"), seed_, shard);
    const auto& o = pipeline_->options();
    if (o.batch_size % world_size() != 0) {
      throw ConfigError(cfg.child("train_ds").child("batch_size").where() + ": batch_size " + std::to_string(o.batch_size) +
                        " (the global batch) must split evenly over the " + std::to_string(world_size()) +
                        " ranks; use a multiple of " + std::to_string(world_size()));
    }
    if (const int64_t k = cfg.find("optimizer") ? cfg.child("optimizer").get_int("accumulate_steps", 1) : 1;
        k > 1 && (o.batch_size / world_size()) % k != 0) {
      throw ConfigError(cfg.child("train_ds").child("batch_size").where() + ": each of the " + std::to_string(world_size()) +
                        " ranks gets " + std::to_string(o.batch_size / world_size()) +
                        " examples of the global batch, which optimizer.accumulate_steps " + std::to_string(k) +
                        " cannot split evenly; use a batch_size divisible by " + std::to_string(world_size() * k));
    }
    // The end of the data is the end of training (final evals and checkpoint included).
    if (o.num_epochs > 0) {
      const int64_t data_steps = o.num_epochs * pipeline_->batches_per_epoch();
      if (data_steps <= 0) {
        throw ConfigError(cfg.child("train_ds").where() + ": the training data gives no batch: " +
                          std::to_string(pipeline_->num_examples()) + " examples, batch_size " +
                          std::to_string(o.batch_size) + (o.drop_remainder ? " with drop_remainder: true" : ""));
      }
      if (num_train_steps_ == 0 || data_steps < num_train_steps_) {
        if (num_train_steps_ > 0) {
          log_->info("the training data ends after {} steps ({} epoch{} of {} batches), before num_train_steps {}: "
                     "training ends there", data_steps, o.num_epochs, o.num_epochs == 1 ? "" : "s",
                     pipeline_->batches_per_epoch(), num_train_steps_);
        }
        num_train_steps_ = data_steps;
      }
    } else if (num_train_steps_ == 0) {
      throw ConfigError(cfg.where() + ": set num_train_steps, or train_ds.num_epochs to train for a number of epochs");
    }
    if (world_size() > 1 && !o.drop_remainder && pipeline_->num_examples() % o.batch_size != 0) {
      throw ConfigError(cfg.child("train_ds").where() + ": drop_remainder: false leaves a last batch of " +
                        std::to_string(pipeline_->num_examples() % o.batch_size) + " examples that " +
                        std::to_string(world_size()) + " ranks cannot split evenly; use drop_remainder: true");
    }
  }
  step_ = std::make_unique<TrainStep>(model_, cfg.child("optimizer"), auxiliaries_);
  step_->set_nan_policy(parse_nan_policy(cfg));

  if (auto s = cfg.find("schedules"); s && !s->is_null()) {
    for (const auto& name : s->keys()) schedules_.emplace_back(name, optim::make_schedule(s->child(name)));
  }
  if (auto e = cfg.find("evals"); e && !e->is_null()) {
    for (const auto& name : e->keys()) {
      evaluators_.push_back(
          std::make_unique<evals::Evaluator>(name, e->child(name), seed_, auxiliaries_, world_size(), rank()));
    }
  }
  if (auto w = cfg.find("writer"); w && !w->is_null()) {
    write_jsonl_ = w->get_bool("jsonl", true);
    write_csv_ = w->get_bool("csv", true);
    write_tensorboard_ = w->get_bool("tensorboard", true);
    w->check_unknown_keys();
  }
  if (auto c = cfg.find("callbacks"); c && !c->is_null()) {
    for (const auto& name : c->keys()) callbacks_.push_back(callback_registry().create(c->child(name)));
  }

  int64_t params = 0;
  for (const auto& p : model_->parameters()) params += p.numel();
  if (auto n = cfg.find("num_threads"); n && !n->is_null() && n->as_string() != "auto") {
    // More threads than a few per core only contend (and tens of thousands never start).
    const int64_t most = 4 * std::max<int64_t>(1, std::thread::hardware_concurrency());
    num_threads_ = n->as_int();
    if (num_threads_ <= 0 || num_threads_ > most) {
      throw ConfigError(n->where() + ": num_threads must be auto or in [1, " + std::to_string(most) + "] (4 per core of " +
                        "this machine), got " + std::to_string(num_threads_));
    }
  } else {
    // The cores are shared by the ranks of this machine.
    const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency() / (world_ ? world_->local_world_size : 1));
    num_threads_ = params >= kParamsForAllThreads ? cores : 1;
  }
  cfg.check_unknown_keys();

  state_ = step_->init();
  progress_ = is_chief() && isatty(STDERR_FILENO) != 0;
  log_->info("experiment: {} parameters, device {}, {} intra-op thread{}{}", params, device_.str(), num_threads_,
             num_threads_ == 1 ? "" : "s", cfg.find("num_threads") ? "" : " (auto)");
  log_->info("train data: {}", pipeline_->description());
  if (world_) join_process_group(distributed_options);
}

int Trainer::rank() const { return world_ ? world_->rank : 0; }
int Trainer::world_size() const { return world_ ? world_->world_size : 1; }

void Trainer::join_process_group(const distributed::Options& options) {
  const auto start = Clock::now();
  // Shown by every rank (the others log only warnings): a rank may wait here for a while.
  log_->log(is_chief() ? spdlog::level::info : spdlog::level::warn,
            "joining a job of {} ranks at {}:{} as rank {} (waiting up to {} s for the others)", world_->world_size,
             world_->master_addr, world_->master_port, world_->rank,
             std::chrono::duration<double>(options.timeout).count());
  group_ = distributed::ProcessGroup::create(*world_, options, device_);
  reducer_ = std::make_unique<distributed::GradientReducer>(group_, model_->parameters(), options.bucket_bytes);
  for (const auto& b : model_->buffers()) {
    if (b.defined()) buffers_.push_back(b.detach());
  }
  // Every step all-reduces the gradients and, with them, two flags: "my loss is not finite" and
  // "I was asked to stop", so that every rank skips, raises or stops at the same step.
  step_->set_gradient_hook([this](bool non_finite) {
    const std::vector<double> any = reducer_->reduce({non_finite ? 1.0 : 0.0, g_stop_signal != 0 ? 1.0 : 0.0});
    stop_all_ = any[1] > 0;
    return any[0] > 0;
  });
  log_->info("data parallel: {} ranks ({} backend, rendezvous {}:{}, {:.1f} s); global batch {} = {} per rank; "
             "{} gradient bucket{}; timeout {} s",
             world_->world_size, group_->backend(), world_->master_addr, world_->master_port,
             std::chrono::duration<double>(Clock::now() - start).count(), pipeline_->options().batch_size,
             pipeline_->options().batch_size / world_->world_size, reducer_->num_buckets(), reducer_->num_buckets() == 1 ? "" : "s",
             std::chrono::duration<double>(options.timeout).count());
}

void Trainer::broadcast_parameters() {
  if (!group_) return;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : model_->parameters()) tensors.push_back(p.detach());
  for (const auto& b : model_->buffers()) {
    if (b.defined()) tensors.push_back(b.detach());
  }
  for (const auto& [path, leaf] : step_->optimizer().ema_params().flatten_paths()) tensors.push_back(leaf.tensor().detach());
  group_->broadcast(tensors, 0, "the broadcast of the parameters from rank 0");
}

int64_t Trainer::rank0_value(int64_t value, const std::string& what) {
  if (!group_) return value;
  std::vector<torch::Tensor> t{torch::full({1}, value, torch::kLong).to(group_->device())};
  group_->broadcast(t, 0, what);
  return t[0].cpu().item<int64_t>();
}

void Trainer::broadcast_buffers() {
  if (!group_ || buffers_.empty()) return;
  group_->broadcast(buffers_, 0, "the broadcast of the buffers from rank 0");
}

Tree Trainer::random_states() const {
  Tree states = Tree::dict();
  for (const c10::Device& device : {c10::Device(c10::kCPU), device_}) {
    if (states.find(device.str())) continue;
    auto generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    states.insert(device.str(), generator.get_state());
  }
  return states;
}

void Trainer::set_random_states(const Tree& states) {
  for (const auto& [name, state] : states.items()) {
    auto generator = at::globalContext().defaultGenerator(c10::Device(name));
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state.tensor());
  }
}

void Trainer::seed_rank() {
  // Rank 0 keeps the experiment's stream; the others get their own, so that their dropout
  // masks differ.
  if (group_ && !is_chief()) {
    torch::manual_seed(static_cast<uint64_t>(seed_) * 1000003ULL + static_cast<uint64_t>(rank()) * 7919ULL +
                       static_cast<uint64_t>(state_.step));
  }
}

AuxiliariesState Trainer::merge_across_ranks(const AuxiliariesState& state,
                                             const std::shared_ptr<const Auxiliaries>& auxiliaries,
                                             const std::string& what) {
  if (!group_) return state;
  const Tree mine = Tree::dict(
      {{"loss_states", state.loss_states}, {"metric_states", state.metric_states}, {"summary_states", state.summary_states}});
  AuxiliariesState merged;
  merged.auxiliaries = auxiliaries;
  for (const Tree& t : distributed::all_gather_trees(*group_, mine, what)) {
    AuxiliariesState other;
    other.loss_states = t.at("loss_states");
    other.metric_states = t.at("metric_states");
    other.summary_states = t.at("summary_states");
    other.auxiliaries = auxiliaries;
    merged = merge(merged, other);
  }
  return merged;
}

Trainer::~Trainer() {
  if (console_) console_->clear();  // an error is printed on a line of its own
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void Trainer::lock_workdir() {
  if (lock_fd_ >= 0 || !fs::exists(workdir_)) return;
  const std::string path = workdir_ + "/.lock";
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw IOError("cannot create \"" + path + "\": " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    throw ConfigError("another kd process is using the workdir \"" + workdir_ +
                      "\"; wait for it to finish, or choose another workdir");
  }
}

void Trainer::open_workdir(const Context* first_context, bool write_config) {
  if (workdir_open_) return;
  workdir_open_ = true;
  if (!is_chief()) return;  // rank 0 writes for the job
  std::error_code ec;
  fs::create_directories(workdir_, ec);
  if (ec) {
    throw IOError(experiment_.child("workdir").where() + ": cannot create the workdir \"" + workdir_ + "\": " +
                  ec.message());
  }
  lock_workdir();
  const std::string config_path = workdir_ + "/config.yaml";
  if (write_config) {
    io::write_file_atomically(*io::posix_file_system(), config_path,
                              "# The resolved experiment; run it again with: kd train --cfg=" + config_path + "\n" +
                                  experiment_.to_yaml() + "\n");
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
  file->set_pattern(kFilePattern);
  log_->sinks().push_back(file);
  if (write_jsonl_) writers_.push_back(std::make_unique<writers::JsonlWriter>(workdir_ + "/metrics.jsonl"));
  if (write_csv_) writers_.push_back(std::make_unique<writers::CsvWriter>(workdir_));
  if (write_tensorboard_) writers_.push_back(std::make_unique<writers::TensorBoardWriter>(workdir_));
  if (start_over_) {
    for (auto& w : writers_) w->truncate_after(-1);  // the records of the run that starts over
  }
  log_->info("workdir: {}", workdir_);
  if (first_context) {
    // Once at the start: the experiment, the parameter table and every Context path.
    std::string context;
    for (const auto& [path, leaf] : first_context->flatten()) context += path + "  " + leaf.describe() + "\n";
    const std::string params = describe_model();
    log_->info("model:\n{}", params);
    for (auto& w : writers_) {
      w->write_text(0, "train", "config", "```\n" + experiment_.to_yaml() + "\n```");
      w->write_text(0, "train", "model", "```\n" + params + "```");
      w->write_text(0, "train", "context", "```\n" + context + "```");
    }
  }
}

void Trainer::resume_or_start(AuxiliariesState& merged, int64_t& interval_steps) {
  // Rank 0 chooses the checkpoint: the newest that restores (one damaged or crafted beyond its
  // checksums is skipped for the one before it); in a data-parallel job every rank then
  // restores that one.
  std::optional<checkpoints::CheckpointInfo> latest;
  Tree restored_aux;
  if (is_chief()) {
    lock_workdir();
    checkpointer_->clean_up_interrupted_saves();
    const auto found = checkpointer_->probe();
    for (const auto& info : found) {
      if (!info.valid()) {
        log_->warn("checkpoint {} is damaged ({}); skipping it", info.path, info.problem);
        continue;
      }
      try {
        check_config_unchanged(io::posix_file_system()->read_file(info.path + "/config.yaml"),
                               "the checkpoints in");
        restored_aux = restore_checkpoint(info, merged, interval_steps);
        latest = info;
        break;
      } catch (const CorruptionError& e) {
        log_->warn("checkpoint {} is damaged ({}); skipping it", info.path, e.what());
      }
    }
    if (latest) {
      // Newer checkpoints that were skipped would outrank the new saves when old ones are pruned.
      for (const auto& info : found) {
        if (info.step > latest->step) {
          log_->warn("checkpoint {} set aside as {}", info.path, checkpointer_->set_aside(info.path));
        }
      }
    }
    if (!latest) {
      if (!found.empty()) {
        throw CorruptionError("the workdir \"" + workdir_ + "\" holds checkpoints but none is valid (see above); "
                              "nothing was changed. Choose another workdir, e.g. --cfg.workdir=" + workdir_ + "_2");
      }
      // A run stopped (killed, out of memory, power) before its first checkpoint: the same
      // experiment starts over and rewrites its logs; another one is refused (it must not
      // overwrite someone else's logs).
      const fs::path config = fs::path(workdir_) / "config.yaml";
      // Only a run that cannot have reached a checkpoint yet: one logged past its first due
      // checkpoint (whose checkpoints were deleted, say) keeps its logs.
      const int64_t interval = checkpointer_->options().save_interval_steps;
      const int64_t first_due = interval > 0 ? std::min(interval, num_train_steps_) : num_train_steps_;
      int64_t logged = 0;
      if (fs::exists(fs::path(workdir_) / "metrics.jsonl")) {
        for (const auto& r : writers::read_jsonl((fs::path(workdir_) / "metrics.jsonl").string())) {
          logged = std::max(logged, r.step);
        }
      }
      if (fs::exists(config) && (logged >= first_due || allow_config_change_)) {
        throw ConfigError("the workdir \"" + workdir_ + "\" holds a run logged up to step " + std::to_string(logged) +
                          " without a checkpoint to resume from" +
                          (allow_config_change_ ? " (and allow_config_change is set)" : "") +
                          "; nothing was changed. Choose another workdir, e.g. --cfg.workdir=" + workdir_ +
                          "_2, or delete this one to start over");
      }
      if (fs::exists(config)) {
        check_config_unchanged(io::posix_file_system()->read_file(config.string()), "the run in");
        start_over_ = true;
        log_->warn("the workdir \"{}\" holds a run of this experiment that stopped before its first checkpoint; "
                   "starting it over (its logs are rewritten)", workdir_);
      } else if (fs::exists(fs::path(workdir_) / "metrics.jsonl")) {
        throw ConfigError("the workdir \"" + workdir_ + "\" already holds logs (metrics.jsonl) of a run without "
                          "config.yaml or a checkpoint; nothing was changed. Choose another workdir, e.g. --cfg.workdir=" +
                          workdir_ + "_2, or delete this one to start over");
      }
    }
  }
  if (group_) {
    const int64_t step = rank0_value(latest ? latest->step : -1, "choosing the checkpoint to resume from");
    if (!is_chief() && step >= 0) {
      for (const auto& info : checkpointer_->probe()) {
        if (info.step == step) {
          latest = info;
          break;
        }
      }
      if (!latest || !latest->valid()) {
        throw CorruptionError("rank " + std::to_string(rank()) + " cannot read checkpoint " + std::to_string(step) +
                              ", which rank 0 resumes from, in \"" + checkpointer_->directory() + "\"" +
                              (latest ? " (" + latest->problem + ")" : std::string()) +
                              ". Every rank must see rank 0's workdir: put it on a shared file system");
      }
      restored_aux = restore_checkpoint(*latest, merged, interval_steps);
    }
  }
  if (!latest) {
    if (init_transform_) {
      const std::string report = checkpoints::apply_init_transform(*init_transform_, *model_, &step_->optimizer().torch_optimizer());
      log_->info("init_transform: {}", report);
    }
    broadcast_parameters();
    seed_rank();
    return;
  }
  if (group_) {
    // The checkpoint holds every rank's random states (CPU and GPU); a job resumed on another
    // number of ranks gives ranks other than 0 fresh streams.
    const Tree* states = restored_aux.find("rank_rng");
    if (states && states->is_list() && static_cast<int>(states->size()) == world_size()) {
      if (!is_chief()) set_random_states(states->children()[static_cast<std::size_t>(rank())]);
    } else {
      seed_rank();
    }
    broadcast_parameters();
  }
  log_->info("resuming from step {} ({})", state_.step, latest->path);
}

Tree Trainer::restore_checkpoint(const checkpoints::CheckpointInfo& info, AuxiliariesState& merged,
                                 int64_t& interval_steps) {
  checkpoints::Snapshot snapshot;
  snapshot.model = model_.get();
  snapshot.optimizer = &step_->optimizer().torch_optimizer();
  snapshot.ema = step_->optimizer().ema_params();
  checkpointer_->restore(info.path, snapshot);
  if (snapshot.aux_steps < 0) throw CorruptionError(info.path + ": a negative count of steps in the interval");
  try {
    pipeline_->restore(snapshot.data);
  } catch (Error& e) {
    if (!allow_config_change_) {
      e.add_context(info.path);
      throw;
    }
    // The data changed with the experiment: it starts from its beginning.
    log_->warn("{}; the changed training data starts from its beginning", e.what());
    pipeline_->restore({});
  }
  state_ = step_->init();
  state_.step = snapshot.step;
  check_optimizer_state(info.path);  // format 1's archive is loaded by LibTorch unchecked
  merged = AuxiliariesState();
  merged.auxiliaries = auxiliaries_;
  if (is_chief()) {  // the states saved are those of every rank, merged; rank 0 carries them on
    const auto field = [&](const char* name) {
      const Tree* t = snapshot.aux.find(name);
      return t ? *t : Tree();
    };
    merged.loss_states = field("loss_states");
    merged.metric_states = field("metric_states");
    merged.summary_states = field("summary_states");
    // States that do not fit the experiment's losses and metrics would fail at the next log.
    try {
      compute_scalars(merge(merged, merged));
    } catch (const std::exception& e) {
      const std::string what = e.what();
      const std::string problem = info.path + ": its interval's loss and metric states do not fit the experiment: " +
                                  what.substr(0, what.find('\n'));
      if (!allow_config_change_) throw CorruptionError(problem);
      // The losses or metrics changed with the experiment: the interval starts afresh.
      log_->warn("{}; the interval's states start afresh", problem);
      merged = AuxiliariesState();
      merged.auxiliaries = auxiliaries_;
      snapshot.aux_steps = 0;
    }
  }
  interval_steps = snapshot.aux_steps;
  return snapshot.aux;
}

void Trainer::check_optimizer_state(const std::string& path) const {
  std::map<std::string, torch::Tensor> params;
  for (const auto& item : model_->named_parameters(/*recurse=*/true)) params.emplace(item.key(), item.value());
  const Tree state = optim::optimizer_state_tree(step_->optimizer().torch_optimizer(), *model_);
  for (const auto& [key, leaf] : state.flatten_paths()) {
    if (!leaf.is_tensor() || leaf.tensor().dim() == 0) continue;  // step counters
    const std::string name = key.str().substr(0, key.str().rfind('.'));
    const auto it = params.find(name);
    if (it == params.end() || leaf.tensor().sizes() != it->second.sizes() ||
        leaf.tensor().scalar_type() != it->second.scalar_type()) {
      throw CorruptionError(path + ": the optimizer state " + key.str() + " is " + describe_tensor(leaf.tensor()) +
                            (it == params.end() ? ", for no parameter of the model"
                                                : ", but the parameter is " + describe_tensor(it->second)));
    }
  }
}

void Trainer::check_config_unchanged(const std::string& saved_yaml, const std::string& what) const {
  if (allow_config_change_) return;
  std::vector<std::pair<std::string, std::string>> before;
  try {
    before = config::Node::parse(saved_yaml, "saved").flatten();
  } catch (const ConfigError& e) {
    throw CorruptionError("the experiment saved with " + what + " \"" + workdir_ + "\" cannot be read: " + e.what());
  }
  const auto now = config::Node::parse(experiment_.to_yaml(), "now").flatten();
  std::map<std::string, std::string> a(before.begin(), before.end()), b(now.begin(), now.end());
  std::vector<std::string> diffs;
  for (const auto& [k, v] : a) {
    if (may_change_on_resume(k)) continue;
    const auto it = b.find(k);
    if (it == b.end()) {
      diffs.push_back(k + ": " + v + " -> (removed)");
    } else if (it->second != v) {
      diffs.push_back(k + ": " + v + " -> " + it->second);
    }
  }
  for (const auto& [k, v] : b) {
    if (!may_change_on_resume(k) && !a.count(k)) diffs.push_back(k + ": (absent) -> " + v);
  }
  if (diffs.empty()) return;
  std::string message = "the experiment differs from the one that trained " + what + " \"" + workdir_ + "\":";
  for (const auto& d : diffs) message += "\n  " + d;
  throw ConfigError(message + "\nResume with the same experiment, pass --cfg.allow_config_change=true to resume anyway, "
                              "or choose another workdir.");
}

void Trainer::save_checkpoint(AuxiliariesState& merged, int64_t interval_steps) {
  Tree rank_rng;
  if (group_) {
    merged = merge_across_ranks(merged, auxiliaries_, "merging the training states for a checkpoint");
    rank_rng = Tree::list(distributed::all_gather_trees(*group_, random_states(), "gathering the random states for a checkpoint"));
    if (!is_chief()) {
      merged = AuxiliariesState();  // rank 0 holds the merged states from here on
      merged.auxiliaries = auxiliaries_;
      return;
    }
  }
  checkpoints::Snapshot snapshot;
  snapshot.step = state_.step;
  snapshot.model = model_.get();
  snapshot.optimizer = &step_->optimizer().torch_optimizer();
  snapshot.ema = step_->optimizer().ema_params();
  snapshot.data = pipeline_->state();
  snapshot.aux = Tree::dict({{"loss_states", merged.loss_states},
                             {"metric_states", merged.metric_states},
                             {"summary_states", merged.summary_states}});
  if (group_) snapshot.aux.insert("rank_rng", rank_rng);
  snapshot.aux_steps = interval_steps;
  snapshot.config_yaml = experiment_.to_yaml();
  const std::string path = checkpointer_->save(snapshot);
  for (auto& cb : callbacks_) cb->on_checkpoint(*this, state_.step, path);
}

void Trainer::train() {
  torch::set_num_threads(static_cast<int>(num_threads_));
  AuxiliariesState merged;
  int64_t interval_steps = 0;
  resume_or_start(merged, interval_steps);
  const bool resumed = state_.step > 0;
  const int64_t last_step = stop_after_steps_ > 0 ? std::min(stop_after_steps_, num_train_steps_) : num_train_steps_;
  if (resumed) {
    open_workdir(nullptr);
    for (auto& w : writers_) w->truncate_after(state_.step);  // those steps are logged again
  }
  for (auto& cb : callbacks_) cb->on_train_start(*this);

  StopSignals signals;
  // Alone, a signal stops the loop; in a job, the ranks agree on it during each step.
  const auto stop_requested = [&] { return group_ ? stop_all_ : signals.received() != 0; };
  start_ = Clock::now();
  const int64_t first_step = state_.step;
  auto interval_start = Clock::now();
  double wait_at_interval_start = pipeline_->wait_seconds();
  int64_t last_saved = resumed ? state_.step : -1;  // a resumed step's checkpoint exists
  while (state_.step < last_step && !stop_requested()) {
    std::optional<Tree> batch = pipeline_->next();
    if (!batch) {  // not expected: the run's length was bounded by the data's (see the constructor)
      log_->warn("the training data ended at step {}, before step {}", state_.step, num_train_steps_);
      break;
    }
    if (!device_.is_cpu()) {
      *batch = batch->map([&](const torch::Tensor& t) { return t.to(device_, /*non_blocking=*/true); });
    }
    const int64_t skipped_before = step_->skipped_steps();
    Context first_context;
    const bool summarize = (state_.step + 1) % log_summaries_every_ == 0 || state_.step + 1 == num_train_steps_;
    auto [next, aux] = step_->step(state_, *batch, state_.step == first_step && !resumed ? &first_context : nullptr,
                                   summarize && !auxiliaries_->summaries.empty());
    state_ = std::move(next);
    // BatchNorm statistics: rank 0's, on every rank after every step (so evals and checkpoints
    // see the same model everywhere).
    broadcast_buffers();
    if (step_->skipped_steps() != skipped_before) log_->warn("step {}: non-finite loss, update skipped (nan_policy: skip_step)", state_.step - 1);
    if (summarize && !aux.summary_states.empty()) {
      open_workdir(resumed ? nullptr : &first_context);
      // Summaries show the batch of the step they are recorded at (all ranks' slices of it).
      write_summaries("train", merge_across_ranks(aux, auxiliaries_, "merging the summaries"));
      aux.summary_states = Tree();
    }
    merged = merge(merged, aux);
    ++interval_steps;
    if (state_.step == first_step + 1) open_workdir(resumed ? nullptr : &first_context);  // the first step worked

    const writers::Scalars* logged = nullptr;
    writers::Scalars values;
    // Logged at fixed steps only (and at the very end), so a stopped and resumed run logs
    // exactly what an uninterrupted one does; the interval's states are in its checkpoint.
    if (state_.step % log_metrics_every_ == 0 || state_.step == num_train_steps_) {
      const double seconds = std::chrono::duration<double>(Clock::now() - interval_start).count();
      values = log_train_metrics(merged, seconds, interval_steps, pipeline_->wait_seconds() - wait_at_interval_start);
      logged = &values;
      merged = AuxiliariesState();
      interval_steps = 0;
      interval_start = Clock::now();
      wait_at_interval_start = pipeline_->wait_seconds();
    }
    for (auto& cb : callbacks_) cb->on_step_end(*this, state_.step, logged);
    // The checkpoint first: an eval that fails must not cost the steps trained since the last one.
    if (last_saved != state_.step && (checkpointer_->should_save(state_.step) || state_.step == last_step)) {
      save_checkpoint(merged, interval_steps);
      last_saved = state_.step;
    }
    if (run_evals(state_.step == num_train_steps_, merged, interval_steps, last_saved == state_.step)) {
      last_saved = state_.step;
    }
    if (progress_) {
      for (const auto& [name, value] : values) {
        if (name == "losses/total") last_loss_ = value;
      }
      console_->update(state_.step, last_step, state_.step - first_step,
                       std::chrono::duration<double>(Clock::now() - start_).count(), last_loss_);
    }
  }
  open_workdir(nullptr);
  console_->clear();
  if (last_saved != state_.step) save_checkpoint(merged, interval_steps);
  for (auto& w : writers_) w->flush();
  for (auto& cb : callbacks_) cb->on_train_end(*this, state_.step);
  const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  if (stop_requested()) {
    if (signals.received()) {
      log_->info("stopped by signal {} at step {}; checkpoint saved. Run the same command again to resume.",
                 signals.received(), state_.step);
    } else {
      log_->info("stopped at step {}: another rank was asked to stop; checkpoint saved. Run the same command "
                 "again to resume.", state_.step);
    }
  } else {
    log_->info("done: step {} of {} in {}", state_.step, num_train_steps_, format_duration(seconds));
  }
  log_->flush();
}

int64_t Trainer::evaluate_checkpoint(std::optional<int64_t> step) {
  // The checkpoint of `step`, or the newest that restores; rank 0 chooses for the job.
  const auto restore = [&](const checkpoints::CheckpointInfo& info) {
    if (!info.valid()) throw CorruptionError("checkpoint " + info.path + " is damaged: " + info.problem);
    checkpoints::Snapshot snapshot;
    snapshot.model = model_.get();
    snapshot.ema = step_->optimizer().ema_params();
    checkpointer_->restore(info.path, snapshot);
    state_ = step_->init();
    state_.step = snapshot.step;
  };
  std::optional<checkpoints::CheckpointInfo> chosen;
  std::exception_ptr failed;  // rank 0's error, raised after the other ranks heard of it
  if (is_chief()) {
    for (const auto& info : checkpointer_->probe()) {
      if (step ? info.step != *step : !info.valid()) continue;
      if (step) {
        try {
          restore(info);  // the one asked for, damaged or not
          chosen = info;
        } catch (const Error&) {
          failed = std::current_exception();
        }
        break;
      }
      try {
        restore(info);
        chosen = info;
        break;
      } catch (const CorruptionError& e) {
        log_->warn("checkpoint {} is damaged ({}); skipping it", info.path, e.what());
      }
    }
  }
  if (group_) {
    const int64_t agreed =
        rank0_value(failed ? -2 : chosen ? chosen->step : -1, "choosing the checkpoint to evaluate");
    if (agreed == -2 && !is_chief()) throw CorruptionError("rank 0 could not restore the checkpoint (its log says why)");
    if (!is_chief() && agreed >= 0) {
      for (const auto& info : checkpointer_->probe()) {
        if (info.step == agreed) chosen = info;
      }
      if (!chosen) throw CorruptionError("rank " + std::to_string(rank()) + " cannot find checkpoint " + std::to_string(agreed));
      restore(*chosen);
    }
  }
  if (failed) std::rethrow_exception(failed);
  if (!chosen) {
    throw ConfigError(step ? "no checkpoint of step " + std::to_string(*step) + " in \"" + checkpointer_->directory() + "\""
                           : "no valid checkpoint in \"" + checkpointer_->directory() + "\"");
  }
  open_workdir(nullptr, /*write_config=*/false);
  for (auto& evaluator : evaluators_) run_eval(*evaluator);
  for (auto& w : writers_) w->flush();
  return state_.step;
}

writers::Scalars Trainer::log_train_metrics(const AuxiliariesState& merged, double seconds, int64_t steps,
                                            double data_wait) {
  writers::Scalars values = compute_scalars(merge_across_ranks(merged, auxiliaries_, "merging the training metrics"));
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
  log_->info("step {}{}", state_.step, line);
  return values;
}

void Trainer::write_summaries(const std::string& collection, const AuxiliariesState& state) {
  std::vector<writers::SummaryRecord> records;
  for (auto& s : compute_summaries(state)) {
    const auto kind = s.summary->kind() == summaries::Summary::Kind::kImages      ? writers::SummaryRecord::Kind::kImages
                      : s.summary->kind() == summaries::Summary::Kind::kHistogram ? writers::SummaryRecord::Kind::kHistogram
                                                                                  : writers::SummaryRecord::Kind::kTexts;
    records.push_back({s.name, kind, std::move(s.value)});
  }
  if (records.empty()) return;
  for (auto& w : writers_) w->write_summaries(state_.step, collection, records);
}

writers::Scalars Trainer::run_eval(evals::Evaluator& evaluator) {
  const auto start = Clock::now();
  const AuxiliariesState result = detail::with_context(
      ("evaluating at step " + std::to_string(state_.step)).c_str(), "eval", "evals", evaluator.name(), [&] {
        return merge_across_ranks(evaluator.evaluate(*step_, state_, device_), evaluator.auxiliaries(),
                                  "merging eval " + evaluator.name());
      });
  write_summaries(evaluator.name(), result);
  writers::Scalars values = compute_scalars(result);
  values.emplace_back("perf_stats/eval_time_sec", std::chrono::duration<double>(Clock::now() - start).count());
  for (auto& w : writers_) w->write_scalars(state_.step, evaluator.name(), values);
  std::string line;
  for (const auto& [name, value] : values) line += fmt::format("  {} {:.4g}", name, value);
  log_->info("eval {} at step {}{}", evaluator.name(), state_.step, line);
  return values;
}

bool Trainer::run_evals(bool last, AuxiliariesState& merged, int64_t interval_steps, bool saved) {
  for (auto& evaluator : evaluators_) {
    if (!evaluator->should_run(state_.step, last)) continue;
    const writers::Scalars values = run_eval(*evaluator);
    for (auto& cb : callbacks_) cb->on_eval_end(*this, evaluator->name(), state_.step, values);
    // A new best is kept as a checkpoint. Rank 0 decides for the job (its timings differ).
    bool best = checkpointer_->report(state_.step, evaluator->name(), values);
    if (group_) best = rank0_value(best ? 1 : 0, "agreeing on the best checkpoint") != 0;
    if (best) {
      if (!saved) save_checkpoint(merged, interval_steps);
      saved = true;
      if (is_chief()) checkpointer_->write_best();
    }
  }
  return saved;
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
