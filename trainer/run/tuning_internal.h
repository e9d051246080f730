// kd::train::Tuning: how a run uses this rank's cores. The intra-op threads: num_threads, or for
// `auto` 1 (one core, or a model too small to gain from more), every core (an accelerator, where
// the threads only prepare data), or measured when training starts: a training pass (forward and
// backward on the first batch) timed on 1, 2, 4, ... and all cores, every core kept unless fewer
// are clearly faster. A resumed run keeps the count its start chose, so that its arithmetic
// (parallel reductions split by thread) stays the uninterrupted run's. And where the training
// batches are made: with `train_ds.prefetch: auto` on the CPU, a data worker thread only where the
// first steps show that it pays: where a core is left over, when making a batch takes 5% of a
// step with it; where every core computes, when the steps timed next with a worker are faster.
//
//   Tuning tuning(options, pipeline, log);
//   tuning.settle(/*measure=*/true, pass);          // before the first step
//   if (tuning.probing()) tuning.after_step(seconds, step);   // after each step
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

namespace spdlog {
class logger;
}
namespace kd::data {
class Pipeline;
}

namespace kd::train {

class Tuning {
 public:
  struct Options {
    std::optional<int64_t> num_threads;  // the experiment's; nullopt for auto
    bool prefetch_configured = false;    // train_ds.prefetch set (not auto)
    bool on_cpu = true;                  // the run's device is the CPU
    int64_t cores = 1;                   // this rank's share of the machine's cores
    int64_t num_parameters = 0;          // the model's
  };
  // `pipeline`: the training data (null when the run only evaluates: then settle is not called).
  Tuning(const Options& options, data::Pipeline* pipeline, spdlog::logger& log);

  // The threads fixed so far; 0 until settle() measures them for `auto`.
  int64_t num_threads() const { return num_threads_; }
  // What `auto` chose when the run a checkpoint resumes started (0: nothing): kept where it fits.
  void resume_with(int64_t threads) { resumed_threads_ = threads; }
  // Before training: fixes the threads (for auto, timing `pass` when `measure`, every core
  // otherwise), sets them, and arranges where the batches are made. `pass` is one training pass
  // that the caller undoes afterwards.
  void settle(bool measure, const std::function<void()>& pass);
  // Whether the first steps are being timed (then after_step is called after each).
  bool probing() const { return probe_.active; }
  // After training step `step` (its TrainStep took `step_seconds`): once enough steps were
  // timed, starts the data worker if it pays, and says so.
  void after_step(double step_seconds, int64_t step);

 private:
  int64_t measure(const std::function<void()>& pass);

  Options options_;
  data::Pipeline* pipeline_;
  spdlog::logger& log_;
  int64_t num_threads_ = 0;
  int64_t resumed_threads_ = 0;
  // The prefetch probe: steps seen, their TrainStep seconds once timed, the pipeline's wait when
  // the timing began.
  struct Probe {
    bool active = false;
    int64_t steps = 0;
    double step_seconds = 0;
    double wait_at_start = 0;
    bool trial = false;           // timing the steps with a worker (every core computing)
    double between_per_step = 0;  // a step with its batch made between steps, as first timed
  } probe_;
};

}  // namespace kd::train
