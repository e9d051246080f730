// kd::train::Trainer: runs an experiment (Kauldron's kd.train.Trainer). Built from the
// resolved experiment; building validates everything and writes nothing. `train()` runs the
// loop, logs to WORKDIR/metrics.jsonl and WORKDIR/log.txt, and runs the evals.
//
//   auto cfg = kd::config::load_experiment("configs/fashion_mnist_mlp.yaml", overrides);
//   kd::train::Trainer trainer(cfg);
//   trainer.train();
//
// Experiment keys: seed, workdir, num_train_steps, stop_after_steps, log_metrics_every,
// log_summaries_every, train_ds, model, train_losses, train_metrics, train_summaries,
// optimizer, schedules, checkpointer, evals, writer, callbacks, init_transform, nan_policy,
// allow_config_change, device, num_threads, distributed (see README).
//
// Data-parallel: started with the torchrun variables set (by torchrun, srun, a PyTorchJob or
// `kd launch`), every rank builds the same Trainer; rank 0 alone writes the workdir, the others
// read its checkpoints. See trainer/distributed/distributed.h.
//
// A workdir that holds checkpoints is resumed from the newest valid one; SIGINT/SIGTERM finish
// the current step, save a checkpoint and return (a second signal exits at once).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "trainer/config/node.h"
#include "trainer/optim/schedules.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/run/callback.h"
#include "trainer/context/context.h"
#include "trainer/run/progress.h"
#include "trainer/context/train_state.h"
#include "trainer/writers/writer.h"

namespace spdlog {
class logger;
}
namespace kd::data {
class Pipeline;
}
namespace kd::checkpoints {
class Checkpointer;
struct CheckpointInfo;
}
namespace kd::evals {
class Evaluator;
}
namespace kd::models {
class Model;
}
namespace kd::distributed {
class ProcessGroup;
class GradientReducer;
struct WorldInfo;
struct Options;
}

namespace kd::train {

class TrainStep;
struct Auxiliaries;

class Trainer {
 public:
  explicit Trainer(const config::Node& experiment);
  ~Trainer();

  // Trains until num_train_steps (or stop_after_steps). Throws kd::Error on bad input.
  void train();

  // Runs one training step without writing anything and returns its Context (kd inspect).
  Context inspect();

  // kd eval: restores checkpoint `step` (the newest valid one when nullopt) of the workdir and
  // runs every eval once, writing to the workdir's writers. Returns the step evaluated.
  int64_t evaluate_checkpoint(std::optional<int64_t> step);
  // "layers.0.weight  float32[512, 784]  401408" lines and the total.
  std::string describe_model() const;

  const std::string& workdir() const { return workdir_; }
  int64_t step() const { return state_.step; }
  const TrainState& state() const { return state_; }
  TrainStep& train_step() { return *step_; }
  spdlog::logger& log() { return *log_; }
  // This process's rank in a data-parallel job (0 when alone) and the number of ranks.
  int rank() const;
  int world_size() const;
  // Rank 0: the one that writes logs, metrics and checkpoints.
  bool is_chief() const { return rank() == 0; }

 private:
  // Creates the workdir and the writers; with the first step's context, also records the
  // experiment, the parameter table and the Context's paths.
  void open_workdir(const Context* first_context, bool write_config = true);
  void write_summaries(const std::string& collection, const AuxiliariesState& state);
  // One evaluation at the current step, written and logged.
  writers::Scalars run_eval(evals::Evaluator& evaluator);
  // Resumes from the newest valid checkpoint of the workdir, if any; the restored interval state.
  void resume_or_start(AuxiliariesState& merged, int64_t& interval_steps);
  // Restores `info` into the model, optimizer, data position and step; the interval's states
  // into `merged` (rank 0). Returns the checkpoint's aux tree. Throws CorruptionError when the
  // checkpoint does not fit the experiment (then the caller may try the one before it).
  Tree restore_checkpoint(const checkpoints::CheckpointInfo& info, AuxiliariesState& merged, int64_t& interval_steps);
  // Throws CorruptionError when a restored optimizer state does not fit its parameter.
  void check_optimizer_state(const std::string& path) const;
  // Throws ConfigError listing the differences from `saved_yaml`, the experiment of `what` (e.g.
  // "the checkpoints in") the workdir, unless allow_config_change.
  void check_config_unchanged(const std::string& saved_yaml, const std::string& what) const;
  // Saves the step's checkpoint (rank 0; every rank takes part). In a data-parallel job the
  // interval's states are first merged over the ranks: rank 0 keeps the merged ones, the
  // others start afresh.
  void save_checkpoint(AuxiliariesState& merged, int64_t interval_steps);
  // The states of every rank merged (in rank order); `state` itself when alone.
  // `auxiliaries` are the ones the states belong to.
  AuxiliariesState merge_across_ranks(const AuxiliariesState& state, const std::shared_ptr<const Auxiliaries>& auxiliaries,
                                      const std::string& what);
  // Joins the job (when started as one) and prepares the gradient all-reduce.
  void join_process_group(const distributed::Options& options);
  // Rank 0's parameters, buffers and EMA to every rank.
  void broadcast_parameters();
  // Rank 0's buffers (e.g. BatchNorm statistics) to every rank, after each step.
  void broadcast_buffers();
  // Gives ranks other than 0 their own random streams (CPU and GPU).
  void seed_rank();
  // This process's random states (CPU and the training device), by device name, and back.
  Tree random_states() const;
  void set_random_states(const Tree& states);
  // Rank 0's `value` on every rank (`value` itself when alone): for decisions ranks must share.
  int64_t rank0_value(int64_t value, const std::string& what);
  writers::Scalars log_train_metrics(const AuxiliariesState& merged, double seconds, int64_t steps,
                                     double data_wait);
  // Runs the evals due at this step; true when it saved a checkpoint (a new best). `saved`: this
  // step's checkpoint exists already.
  bool run_evals(bool last, AuxiliariesState& merged, int64_t interval_steps, bool saved);
  // Holds an exclusive lock on WORKDIR/.lock while this trainer uses the workdir.
  void lock_workdir();

  config::Node experiment_;
  std::string workdir_;
  int64_t seed_ = 0;
  int64_t num_train_steps_ = 0;
  int64_t stop_after_steps_ = 0;
  int64_t log_metrics_every_ = 100;
  int64_t num_threads_ = 1;
  c10::Device device_{c10::kCPU};
  std::vector<std::pair<std::string, std::shared_ptr<const optim::Schedule>>> schedules_;

  std::shared_ptr<models::Model> model_;
  std::shared_ptr<const Auxiliaries> auxiliaries_;
  std::unique_ptr<data::Pipeline> pipeline_;
  std::unique_ptr<TrainStep> step_;
  std::vector<std::unique_ptr<evals::Evaluator>> evaluators_;
  std::vector<std::unique_ptr<writers::MetricWriter>> writers_;
  std::vector<CallbackPtr> callbacks_;
  bool write_jsonl_ = true;
  bool write_csv_ = true;
  bool write_tensorboard_ = true;
  int64_t log_summaries_every_ = 100;
  bool allow_config_change_ = false;
  std::unique_ptr<checkpoints::Checkpointer> checkpointer_;
  std::optional<config::Node> init_transform_;
  TrainState state_;

  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<ProgressConsole> console_;  // the logger's console sink, with the progress bar
  bool progress_ = false;  // a progress bar on a terminal
  std::optional<double> last_loss_;  // the latest logged losses/total, for the progress bar
  bool workdir_open_ = false;
  bool start_over_ = false;  // the workdir's run stopped before its first checkpoint: rewrite its logs
  int lock_fd_ = -1;
  std::chrono::steady_clock::time_point start_;

  // Data-parallel training (null when alone).
  std::unique_ptr<distributed::WorldInfo> world_;
  std::shared_ptr<distributed::ProcessGroup> group_;
  std::unique_ptr<distributed::GradientReducer> reducer_;
  std::vector<torch::Tensor> buffers_;  // the model's buffers, broadcast after each step
  bool stop_all_ = false;  // some rank was asked to stop (agreed on during the last step)
};

}  // namespace kd::train
