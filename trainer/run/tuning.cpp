#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "trainer/common/clock.h"
#include "trainer/data/pipeline.h"
#include "trainer/run/tuning_internal.h"

namespace kd::train {
namespace {

// Models with fewer parameters than this run faster on one thread: the per-op threading
// overhead outweighs the work (measured: a tiny MLP 1.6x slower on 2 threads). Larger ones are
// measured.
constexpr int64_t kParamsWorthMeasuring = 100'000;

// Each count is measured in blocks of passes, in the order 1, 2, ..., all, all, ..., 2, 1 and
// again (kBlocks blocks of each), so that few changes of count happen (a change restarts
// LibTorch's thread pools, whose new threads spin for milliseconds) and each count meets the
// machine early and late. A block: two untimed passes, then timed ones for kBlockSeconds (at
// least kMinTimed); each count's best pass is its speed (a VM's other tenants take whole
// milliseconds from a pass now and then).
constexpr int kBlocks = 4;
constexpr int kMinTimed = 3;
constexpr double kBlockSeconds = 0.03;

// settle_prefetch: after kProbeWarmupSteps untimed steps, the batches and TrainSteps of at least
// kProbeMinSteps steps and kProbeSeconds together (or of kProbeMaxSteps steps) are timed. A worker thread takes a
// batch's making off the step, but every batch then costs a hand-off between threads (measured at about 20 us on a
// 2-core VM, more than a small batch takes to make) and the worker's memory (its malloc arena and the batches held
// ahead: about 2.5 MB for the flagship MLP). It runs when a batch takes at least kWorkerMinBatchSeconds and
// kWorkerMinShare of its step's time with it.
constexpr int64_t kProbeWarmupSteps = 3;
constexpr int64_t kProbeMinSteps = 10;
constexpr int64_t kProbeMaxSteps = 500;
constexpr double kProbeSeconds = 0.2;
constexpr double kWorkerMinBatchSeconds = 2e-4;
constexpr double kWorkerMinShare = 0.05;
constexpr int64_t kWorkerPrefetch = 2;
// Where the worker shares the step's cores, it is tried for as many steps and kept unless a step
// with its wait takes longer than one with its batch made between steps.
constexpr double kTrialSeconds = 2.0;

}  // namespace

Tuning::Tuning(const Options& options, data::Pipeline* pipeline, spdlog::logger& log)
    : options_(options), pipeline_(pipeline), log_(log) {
  if (options_.num_threads) {
    num_threads_ = *options_.num_threads;
  } else if (options_.cores == 1 || options_.num_parameters < kParamsWorthMeasuring) {
    num_threads_ = 1;
  } else if (!options_.on_cpu) {
    num_threads_ = options_.cores;  // on an accelerator the threads only prepare data
  }                                 // else measured by settle()
}

void Tuning::settle(bool measure, const std::function<void()>& pass) {
  if (num_threads_ == 0) {
    if (resumed_threads_ > 0 && resumed_threads_ <= options_.cores) {
      num_threads_ = resumed_threads_;
      log_.info("intra-op threads: {} (auto: as the run chose when it started)", num_threads_);
    } else if (measure) {
      // The worker, preparing its first batches, would take a core from the passes measured.
      const int64_t prefetch = pipeline_->options().prefetch;
      pipeline_->set_prefetch(0);
      num_threads_ = this->measure(pass);
      pipeline_->set_prefetch(prefetch);
    } else {
      num_threads_ = options_.cores;
    }
  }
  torch::set_num_threads(static_cast<int>(num_threads_));
  if (options_.prefetch_configured || !options_.on_cpu) return;
  // The first steps, their batches made between them, tell whether a worker pays (a worker
  // started by an earlier decision is stopped to time them again).
  if (pipeline_->options().prefetch > 0) pipeline_->set_prefetch(0);
  probe_ = {};
  probe_.active = true;
}

void Tuning::after_step(double step_seconds, int64_t step) {
  Probe& probe = probe_;
  if (++probe.steps <= kProbeWarmupSteps) {
    if (probe.steps == kProbeWarmupSteps) probe.wait_at_start = pipeline_->wait_seconds();
    return;
  }
  probe.step_seconds += step_seconds;
  const int64_t n = probe.steps - kProbeWarmupSteps;
  const double wait = pipeline_->wait_seconds() - probe.wait_at_start;
  const double total = wait + probe.step_seconds;  // evals, checkpoints and logging left out
  // Where every core computes, the two ways are compared on longer stretches (the difference
  // is a few percent).
  const double seconds = num_threads_ >= options_.cores ? kTrialSeconds : kProbeSeconds;
  if (n < kProbeMinSteps || (total < seconds && n < kProbeMaxSteps)) return;
  const double per_step = total / static_cast<double>(n);
  const std::string ahead = "prepared " + std::to_string(kWorkerPrefetch) + " batches ahead on a worker thread";
  const std::string choose = "; set train_ds.prefetch to choose)";
  if (probe.trial) {
    // The worker ran on a core the step's threads use too: it stays unless the steps with their
    // waits were slower than with the batches made between them.
    probe.active = false;
    const bool keep = per_step <= probe.between_per_step;
    if (!keep) pipeline_->set_prefetch(0);
    log_.info("train data: {} (auto: {:.3f} ms a step with a worker, {:.3f} ms with the batches made between steps{}",
              keep ? ahead : std::string("prepared between steps from step ") + std::to_string(step), per_step * 1e3,
              probe.between_per_step * 1e3, choose);
    return;
  }
  // With the batches prepared between steps, the pipeline's wait is the time spent making them.
  const double batch_seconds = wait / static_cast<double>(n);
  const double share = wait / std::max(total, 1e-9);
  const bool worth_it = batch_seconds >= kWorkerMinBatchSeconds && share >= kWorkerMinShare;
  const std::string measured = fmt::format("a batch took {:.3f} ms, {:.1f}% of a step with its batch, over {} steps",
                                           batch_seconds * 1e3, share * 100, n);
  if (worth_it && num_threads_ >= options_.cores) {
    // Every core computes: a worker alongside takes time from the step's threads, so the next
    // steps are timed with one before it is kept.
    probe = {};
    probe.active = true;
    probe.trial = true;
    probe.between_per_step = per_step;
    pipeline_->set_prefetch(kWorkerPrefetch);
    log_.info("train data: trying a worker thread from step {} ({} intra-op thread{} on {} core{}; {})", step,
              num_threads_, num_threads_ == 1 ? "" : "s", options_.cores, options_.cores == 1 ? "" : "s", measured);
    return;
  }
  probe.active = false;
  if (worth_it) pipeline_->set_prefetch(kWorkerPrefetch);
  log_.info("train data: {} (auto: {}{}",
            worth_it ? ahead + " from step " + std::to_string(step) : std::string("prepared between steps"), measured,
            choose);
}

int64_t Tuning::measure(const std::function<void()>& pass) {
  const int64_t cores = options_.cores;
  std::vector<int64_t> candidates;
  for (int64_t t = 1; t < cores; t *= 2) candidates.push_back(t);
  candidates.push_back(cores);
  std::vector<double> best(candidates.size(), std::numeric_limits<double>::infinity());
  for (int block = 0; block < kBlocks; ++block) {
    for (std::size_t j = 0; j < candidates.size(); ++j) {
      const std::size_t i = block % 2 == 0 ? j : candidates.size() - 1 - j;
      torch::set_num_threads(static_cast<int>(candidates[i]));
      pass();
      pass();
      const auto start = Clock::now();
      for (int timed = 0; timed < kMinTimed || seconds_since(start) < kBlockSeconds; ++timed) {
        const auto t0 = Clock::now();
        pass();
        best[i] = std::min(best[i], seconds_since(t0));
      }
    }
  }
  // Every core (what a model of this size usually wants), unless fewer threads are clearly
  // faster: the fastest count, when at least 10% faster than all of them (a measurement this
  // short on a shared machine is only that precise).
  const std::size_t fastest = static_cast<std::size_t>(std::min_element(best.begin(), best.end()) - best.begin());
  const std::size_t chosen = best[fastest] * 1.1 <= best.back() ? fastest : best.size() - 1;
  std::string timings;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    timings += fmt::format("{}{} thread{} {:.2f} ms", i ? ", " : "", candidates[i], candidates[i] == 1 ? "" : "s",
                           best[i] * 1e3);
  }
  log_.info("intra-op threads: {} (auto; a forward and backward pass measured: {})", candidates[chosen], timings);
  return candidates[chosen];
}

}  // namespace kd::train
