// kd::train::Recorder: what a run shows and records of itself: the start (the experiment, the
// parameter table, every Context path), the training metrics lines with their perf_stats, the
// evals, the summaries, and the progress bar. It writes to the workdir's writers and logs.
//
//   values = recorder.train_metrics(step, scalars, interval);   // a log step
//   recorder.progress(step, last_step, steps_this_run, seconds, values);  // every step
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "trainer/common/torch_fwd.h"
#include "trainer/context/auxiliaries_state.h"
#include "trainer/writers/writer.h"

namespace spdlog {
class logger;
}

namespace kd::train {

class ProgressConsole;
class Workdir;
struct Context;

// The steps of a logging interval and how long they took.
struct IntervalTiming {
  int64_t steps = 0;
  double seconds = 0;              // the interval's wall time, checkpoints and evals included
  double data_wait_seconds = 0;    // of `seconds`, waiting for the data pipeline
  double checkpoint_seconds = 0;   // of `seconds`, saving checkpoints
  double eval_seconds = 0;         // of `seconds`, running evals
  int64_t batch_size = 0;          // the global batch
  int world_size = 1;              // the processes that share it
  double training_seconds = 0;     // the run's wall time so far, over all its resumptions
  int64_t device_peak_bytes = -1;  // LibTorch's CUDA allocator's peak on the run's device; -1: not CUDA
  int64_t skipped_examples = -1;   // left out by train_ds.on_error: skip (this process's); -1: not skipping
};

// "  params.layers.0.weight  float32[512, 784]  401408" lines, the buffers
// ("  collections.…"), and the total.
std::string model_table(const torch::nn::Module& model);

class Recorder {
 public:
  // `progress`: draw the progress bar (rank 0 on a terminal).
  Recorder(std::shared_ptr<spdlog::logger> log, std::shared_ptr<ProgressConsole> console, bool progress,
           Workdir& workdir);

  // Once at the start of a run: the experiment, the model's table and every path of the first
  // step's Context, as texts of the "train" collection.
  void record_start(const Context& first_context, const std::string& experiment_yaml, const std::string& model_table);

  // A log step: `values` (losses, metrics, schedules) and the interval's perf_stats, written
  // and logged as one line. Returns everything written. The speeds count the time of the
  // steps only (Kauldron's Chrono pauses for checkpoints and evals), which are reported apart.
  writers::Scalars train_metrics(int64_t step, writers::Scalars values, const IntervalTiming& interval);
  // An eval's values and its perf_stats/eval_time_sec, written and logged. Returns them.
  writers::Scalars eval(int64_t step, const std::string& name, const AuxiliariesState& result, double seconds);
  // The summaries of `state` as records of `collection`.
  void summaries(int64_t step, const std::string& collection, const AuxiliariesState& state);

  // After every step: the progress bar, with the latest losses/total logged (from `logged`,
  // when this was a log step).
  void progress(int64_t step, int64_t last_step, int64_t steps_this_run, double seconds,
                const writers::Scalars& logged);
  // Removes the progress bar (before the last lines, or an error).
  void clear();
  void flush();

 private:
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<ProgressConsole> console_;
  bool progress_;
  Workdir& workdir_;
  std::optional<double> last_loss_;  // the latest logged losses/total
};

}  // namespace kd::train
