// kd::train::TrainerOptions: the experiment's top-level keys that the run itself reads, each
// with its default here and nowhere else (Kauldron's kd.train.Trainer fields). The components'
// sections (model, train_ds, train_losses, train_metrics, train_summaries, optimizer,
// schedules, evals, callbacks) are read by the components themselves.
#pragma once

#include <csignal>
#include <cstdint>
#include <optional>
#include <string>

#include <c10/core/Device.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/config/node.h"
#include "trainer/distributed/distributed.h"
#include "trainer/step/precision.h"
#include "trainer/step/train_step.h"
#include "trainer/writers/writer.h"

namespace kd::train {

// kd train's exit code after requeue_signal stopped a run that it could not requeue (no
// SLURM_JOB_ID or no scontrol): the checkpoint is saved; run the same command to resume.
inline constexpr int kExitNotRequeued = 3;

struct TrainerOptions {
  // seed: one seed for model init, dropout and data order.
  int64_t seed = 0;
  // workdir: where the run writes config.yaml, log.txt, metrics and checkpoints (required).
  std::string workdir;
  // num_train_steps: the length of the run (> 0); 0 when left out, when train_ds.num_epochs
  // bounds the run instead. The end of the data ends training either way.
  int64_t num_train_steps = 0;
  // stop_after_steps: stop (with a checkpoint) at this step, to resume later; 0: never.
  int64_t stop_after_steps = 0;
  // stop_after_time: "HH:MM:SS" (or Slurm's "D-HH:MM:SS"): stop (with a checkpoint, without the
  // final evals) after the first step that ends this long after `kd train` started training in
  // this process, to resume later; for schedulers with wall-clock limits. 0: never.
  double stop_after_seconds = 0;
  // log_metrics_every: log the training losses, metrics and perf_stats every this many steps.
  int64_t log_metrics_every = 100;
  // log_summaries_every: record the training summaries every this many steps (default:
  // log_metrics_every).
  int64_t log_summaries_every = 100;
  // nan_policy: raise | skip_step | ignore, for a step whose loss is not finite.
  NanPolicy nan_policy = kDefaultNanPolicy;
  // requeue_signal: USR1 | USR2 | none. The signal a scheduler sends before a time limit
  // (`sbatch --signal=USR1@120`): the run stops as on SIGTERM (every rank finishes its step, the
  // checkpoint is written), then rank 0 requeues the SLURM job (`scontrol requeue
  // $SLURM_JOB_ID`), or, without SLURM_JOB_ID or scontrol, kd exits with kExitNotRequeued.
  int requeue_signal = SIGUSR1;
  // allow_config_change: resume a workdir whose experiment differs (outside the keys that may
  // change, see may_change_on_resume).
  bool allow_config_change = false;
  // init_transform: start from another run's checkpoint (see checkpoints/init_transform.h).
  std::optional<config::Node> init_transform;
  // device: cpu | cuda | cuda:N (in a data-parallel job, `cuda` is each rank's LOCAL_RANK).
  c10::Device device{c10::kCPU};
  // precision: fp32 | bf16 (autocast, CPU or CUDA) | fp16 (autocast and loss scaling, CUDA);
  // grad_scaler: fp16's loss scaling (precision.h).
  Precision precision = Precision::kFp32;
  GradScalerOptions grad_scaler;
  // num_threads: intra-op threads; nullopt for `auto` (one for small models, else every core
  // of this rank's share of the machine).
  std::optional<int64_t> num_threads;
  // writer: which metric writers the workdir gets.
  writers::WriterOptions writer;
  // checkpointer: when checkpoints are saved and which are kept.
  checkpoints::CheckpointerOptions checkpointer;
  // distributed: the process group of a data-parallel job.
  distributed::Options distributed;

  // Reads the keys above from the experiment (marking them known); ConfigError naming the key.
  static TrainerOptions from_config(const config::Node& experiment);
};

// Seconds of a duration "[D-]H:MM:SS" (or "M:SS", or a number of seconds); ConfigError naming
// `where` otherwise.
double parse_duration(const std::string& text, const std::string& where);

// Keys that may change between a run and its resumption: how long and how it logs, and where and
// in how many pieces the same global batch is computed (ranks, accumulate_steps).
bool may_change_on_resume(const std::string& key);

}  // namespace kd::train
