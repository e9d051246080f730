// kd::train::Trainer: runs an experiment (Kauldron's kd.train.Trainer). Built from the
// resolved experiment; building validates everything and writes nothing. `train()` runs the
// loop, logs to WORKDIR/metrics.jsonl and WORKDIR/log.txt, and runs the evals.
//
//   auto cfg = kd::config::load_experiment("configs/fashion_mnist_mlp.yaml", overrides);
//   kd::train::Trainer trainer(cfg);
//   trainer.train();
//
// The experiment's top-level keys are TrainerOptions' (trainer_options.h); the components read
// their own sections (see README).
//
// Data-parallel: started with the torchrun variables set (by torchrun, srun, a PyTorchJob or
// `kd launch`), every rank builds the same Trainer; rank 0 alone writes the workdir, the others
// read its checkpoints (data_parallel.h).
//
// A workdir that holds checkpoints is resumed from the newest valid one; SIGINT/SIGTERM finish
// the current step, save a checkpoint and return (a second signal exits at once).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "trainer/config/node.h"
#include "trainer/context/auxiliaries_state.h"
#include "trainer/context/context.h"
#include "trainer/context/train_state.h"
#include "trainer/optim/schedules.h"
#include "trainer/run/callback.h"
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
struct Snapshot;
}  // namespace kd::checkpoints
namespace kd::evals {
class Evaluator;
}
namespace kd::models {
class Model;
}

namespace kd::train {

class Profiler;

class DataParallel;
struct TrainerOptions;
class ProgressConsole;
class Recorder;
class Tuning;
class TrainStep;
class Workdir;
struct Auxiliaries;
struct RunState;

class Trainer {
 public:
  // `log`: a logger of the caller's for the run's lines (its level, pattern and sinks apply);
  // by default they go to stderr, with a progress bar on a terminal. WORKDIR/log.txt keeps
  // every line at info and above either way.
  // What a Trainer is built for: training (train, inspect, follow_checkpoints), or evaluating a
  // saved checkpoint (evaluate_checkpoint alone, as `kd eval` does), which neither builds nor
  // reads train_ds: the run that trained checked it, and its files may be gone; or describing
  // the experiment (kd config): every component built, so that every key is read and checked and
  // every default taken (config::Node::defaults_taken), but no training data read, no process
  // group joined; nothing else may be called.
  enum class Purpose { kTrain, kEvaluate, kDescribe };

  explicit Trainer(const config::Node& experiment, std::shared_ptr<spdlog::logger> log = nullptr,
                   Purpose purpose = Purpose::kTrain);
  ~Trainer();

  // Trains until num_train_steps (or stop_after_steps, stop_after_time, a stop signal, or a
  // callback's request_stop). Throws kd::Error on bad input.
  void train();
  // Stops the run after the current step (alone; in a data-parallel job after the next one, on
  // every rank), with a checkpoint and the evals that run at the end; `reason` is logged. For
  // callbacks. The first reason given is kept.
  void request_stop(const std::string& reason);
  // Why the run was asked to stop (empty: it was not).
  const std::string& stop_reason() const { return stop_reason_; }
  // The exit code for kd train after train(): 0, or kExitNotRequeued when requeue_signal stopped
  // the run and it could not be requeued (trainer_options.h).
  int exit_code() const { return exit_code_; }
  // The names of the experiment's evals (the collections of their metrics).
  std::vector<std::string> eval_names() const;

  // For what reads an eval's logged value by "<eval name>/<value>" (EarlyStopping's metric, the
  // checkpointer's best_metric_path), before training: ConfigError naming `where` (a YAML
  // position and key) and the fix unless an eval of that name runs in training and logs that
  // value. Returns the eval's name and the value's.
  std::pair<std::string, std::string> check_eval_value(const std::string& path, const std::string& where) const;

  // Runs one training step without writing anything and returns its Context (kd inspect).
  Context inspect();

  // kd eval: restores checkpoint `step` (the newest valid one when nullopt) of the workdir and
  // runs every eval once, writing to the workdir's writers. Returns the step evaluated.
  int64_t evaluate_checkpoint(std::optional<int64_t> step);
  // kd eval --follow (Kauldron's standalone evaluator), beside the process that trains the
  // workdir: evaluates each new checkpoint (the newest, when several appeared since the last
  // look) with the evals whose run is StandaloneEveryCheckpoint, and the last one with those
  // whose run is StandaloneLastCheckpoint, writing to the workdir's writers. Ends after the
  // checkpoint of num_train_steps, when the training process it saw ends, when none holds the
  // workdir and nothing new appears for `timeout_seconds`, or on SIGINT/SIGTERM (then without
  // the last-checkpoint evals). Returns the steps evaluated, in order.
  struct FollowOptions {
    double poll_seconds = 2;
    double timeout_seconds = 600;
  };
  std::vector<int64_t> follow_checkpoints(const FollowOptions& follow);
  // kd predict (Lightning's Trainer.predict): restores checkpoint `step` (the newest valid one
  // when nullopt), runs the model in eval mode over every example of a dataset, in its order and
  // with its transforms, and writes the Context paths `keys` selects: into OUT/<path>.npy (one
  // array per path, example i in row i) or, when `out` ends in .jsonl, one JSON line per example.
  // The output appears whole or not at all (written beside it, then renamed); an existing `out` is
  // replaced only with `overwrite`. Returns the step used.
  struct PredictOptions {
    std::optional<int64_t> step;
    std::string ds;  // an eval's name (its ds) or "train" (train_ds); empty: the only eval
    std::string out;
    std::vector<std::string> keys = {"preds.**"};
    bool use_ema = false;
    bool overwrite = false;
  };
  int64_t predict(const PredictOptions& options);
  // "layers.0.weight  float32[512, 784]  401408" lines and the total.
  std::string describe_model() const;

  const std::string& workdir() const;
  // The experiment's top-level keys as read (trainer_options.h).
  const TrainerOptions& options() const { return *options_; }
  // The intra-op threads the run uses (num_threads, or the one chosen for `auto`; 0 until training
  // or inspect() starts when `auto` measures them).
  int64_t num_threads() const;
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
  // The losses, metrics and summaries merged since the last log step.
  struct Interval {
    AuxiliariesState merged;
    int64_t steps = 0;
    std::chrono::steady_clock::time_point start;
    double wait_at_start = 0;       // the pipeline's wait_seconds() then
    double checkpoint_seconds = 0;  // spent saving checkpoints since `start`
    double eval_seconds = 0;        // spent in evals since `start`
  };

  // Error unless built with Purpose::kTrain (`what`: the member function called).
  void require_training_data(const char* what) const;
  // Builders of the constructor.
  void build_data(const config::Node& cfg);
  // `read_data` false (kd config): the evals' data is not read.
  void build_components(const config::Node& cfg, bool read_data = true);
  // The cores of this machine's affinity mask over its ranks.
  int64_t cores_for_rank() const;
  // Fixes and sets the intra-op threads (Tuning::settle), with a training pass on the next batch
  // for `auto` to time, whose effects besides gradients (random states, buffers) are undone.
  void settle_threads(bool measure = true);

  // The training loop's own bookkeeping (train()).
  struct Loop {
    int64_t first_step = 0;   // the step this process started from
    int64_t last_step = 0;    // num_train_steps, or stop_after_steps when smaller
    int64_t last_saved = -1;  // the step of the newest checkpoint (a resumed one's included)
    bool resumed = false;
    // Evals due at step 0: run on the initial params, written once the workdir opens.
    std::vector<std::pair<evals::Evaluator*, std::pair<AuxiliariesState, double>>> initial_evals;
  };
  // The loop's stages, in the order a run goes through them (trainer.cpp): the workdir of a
  // resumed run reopened and the callbacks told; the clock and the step-0 evals; each step
  // (false when the data ended early) and what follows it (logs, checkpoint, evals, progress,
  // time limit); the end (final checkpoint and evals, the closing line).
  Loop start_loop();
  void start_clock_and_initial_evals(Loop& loop);
  bool train_step(Loop& loop);
  void after_step(Loop& loop);
  void end_loop(Loop& loop, bool stop_at_start, int signal);
  void record_initial_evals(Loop& loop);

  void record_summaries(AuxiliariesState& aux);
  // The interval's values (losses, metrics, schedules, perf_stats) written and logged.
  writers::Scalars log_train_metrics();
  // Runs the evals due at this step; true when it saved a checkpoint (a new best). `saved`:
  // this step's checkpoint exists already.
  // `only_end`: only those that run at the end and not already at this step.
  bool run_evals(bool last, bool saved, bool only_end = false);
  // After evals at a step whose checkpoint was saved before them: callbacks that keep state
  // (EarlyStopping) saw their results, so the checkpoint is saved again with that state (a run
  // stopped at that step stays stopped when started again). Every rank calls it.
  void save_again_after_evals();
  // One evaluation at the current step, written and logged.
  writers::Scalars run_eval(evals::Evaluator& evaluator);
  // The merged states of one evaluation (of the EMA params with use_ema), and its seconds.
  std::pair<AuxiliariesState, double> evaluate(evals::Evaluator& evaluator);
  // Writes and logs an evaluation's result as of `step`.
  writers::Scalars record_eval(evals::Evaluator& evaluator, int64_t step, const AuxiliariesState& result,
                               double seconds);
  void finish(int signal);
  // After requeue_signal stopped the run (its checkpoint saved): rank 0 requeues the SLURM job.
  void requeue();
  // Restores the params (and EMA) of checkpoint `info` and its step, for evaluating it.
  void restore_params(const checkpoints::CheckpointInfo& info);
  // Restores checkpoint `step` (the newest valid one when nullopt) for evaluate_checkpoint and
  // predict, rank 0 choosing for the job; ConfigError when there is none.
  void restore_for_evaluation(std::optional<int64_t> step);
  // kd eval --follow: restores the newest checkpoint after step `after` that restores, warning
  // once about each one that does not (`skipped`); false when there is none.
  bool restore_newest_after(int64_t after, std::set<int64_t>& skipped);
  // Evaluates every one of `evaluators` at the current step, then writes their results.
  void evaluate_and_record(const std::vector<evals::Evaluator*>& evaluators);
  // The run's wall time: this process's training so far plus that of the runs it resumes.
  double training_seconds() const;
  // Opens the workdir; with the first step's context, also records the start of the run.
  void open_workdir(const Context* first_context, bool write_config = true);

  // Resuming and saving (trainer_checkpoints.cpp).
  // Resumes from the newest valid checkpoint of the workdir, if any, or starts (init_transform).
  void resume_or_start();
  // Rank 0 chooses the checkpoint to resume from and restores it; nullopt when there is none.
  std::optional<checkpoints::CheckpointInfo> resume_chief(RunState& restored);
  // With no checkpoint: refuses a workdir that holds another run's logs, or starts this one over.
  void check_fresh_workdir();
  // Restores `info` into the model, optimizer, data position and step, and the run's own state
  // (restore_run_state). Returns that state. Throws CorruptionError when the checkpoint does not
  // fit the experiment (then the caller may try the one before it).
  RunState restore_checkpoint(const checkpoints::CheckpointInfo& info);
  // The run's own state for a checkpoint (`rank_rng`: every rank's random states, gathered).
  RunState run_state(Tree rank_rng) const;
  // The one place a checkpoint's run state is put back: the interval's states, the callbacks',
  // the gradient scaler, the training time, the threads `auto` chose.
  void restore_run_state(const RunState& run, const checkpoints::CheckpointInfo& info);
  // Restores the interval's states (rank 0), unless they do not fit.
  void restore_interval(const checkpoints::CheckpointInfo& info, const Tree& interval, int64_t steps);
  // The keys (that may not change on resume) in which this experiment differs from `saved_yaml`,
  // the experiment of `what` (e.g. "the checkpoints in") the workdir: "key: before -> now".
  std::vector<std::string> config_differences(const std::string& saved_yaml, const std::string& what) const;
  // Throws ConfigError listing those differences, unless allow_config_change.
  void check_config_unchanged(const std::string& saved_yaml, const std::string& what) const;
  // Checkpointer::restore, a MismatchError said as a checkpoint of another experiment (the
  // checkpoint's config.yaml differs) or as damage (it does not).
  void restore_into(const checkpoints::CheckpointInfo& info, checkpoints::Snapshot& snapshot) const;
  // Saves the step's checkpoint (rank 0; every rank takes part). In a data-parallel job the
  // interval's states are first merged over the ranks: rank 0 keeps the merged ones, the
  // others start afresh.
  void save_checkpoint();

  config::Node experiment_;
  std::unique_ptr<TrainerOptions> options_;
  std::unique_ptr<Tuning> tuning_;  // the intra-op threads and where batches are made
  std::unique_ptr<DataParallel> parallel_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<ProgressConsole> console_;
  std::unique_ptr<Workdir> workdir_;
  std::unique_ptr<Recorder> recorder_;

  std::shared_ptr<models::Model> model_;
  std::shared_ptr<const Auxiliaries> auxiliaries_;
  std::unique_ptr<data::Pipeline> pipeline_;
  std::unique_ptr<TrainStep> step_;
  std::vector<std::pair<std::string, std::shared_ptr<const optim::Schedule>>> schedules_;
  std::vector<std::unique_ptr<evals::Evaluator>> evaluators_;
  std::vector<CallbackPtr> callbacks_;
  std::unique_ptr<Profiler> profiler_;       // the `profiler` section's, on rank 0
  std::vector<std::string> callback_names_;  // their keys under `callbacks`, for their states
  std::string stop_reason_;                  // request_stop's
  int exit_code_ = 0;
  bool stop_for_time_ = false;  // stop_after_time: no final evals
  std::unique_ptr<checkpoints::Checkpointer> checkpointer_;
  TrainState state_;
  Interval interval_;
  std::chrono::steady_clock::time_point start_;
  double training_seconds_before_ = 0;  // the wall time of the runs this one resumes (their checkpoints')
  bool training_ = false;               // train() is running: start_ is set
  bool callbacks_saw_evals_ = false;    // since the last checkpoint (save_again_after_evals)
};

}  // namespace kd::train
