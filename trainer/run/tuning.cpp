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
  // With every core computing, a worker preparing batches alongside would take one from the
  // threads the step waits for: the batches are then prepared between steps instead.
  const int64_t cores = options_.cores;
  if (options_.prefetch_configured || !options_.on_cpu) return;
  probe_ = {};
  if (num_threads_ >= cores) {
    pipeline_->set_prefetch(0);
    log_.info(
        "train data: prepared between steps ({} intra-op thread{} on {} core{}; set train_ds.prefetch to "
        "prepare them on a worker thread anyway)",
        num_threads_, num_threads_ == 1 ? "" : "s", cores, cores == 1 ? "" : "s");
  } else {
    // A core is left over: the first steps, their batches made between them, tell whether a
    // worker pays (a worker started by an earlier decision is stopped to time them again).
    if (pipeline_->options().prefetch > 0) pipeline_->set_prefetch(0);
    probe_.active = true;
  }
}

void Tuning::after_step(double step_seconds, int64_t step) {
  Probe& probe = probe_;
  if (++probe.steps <= kProbeWarmupSteps) {
    if (probe.steps == kProbeWarmupSteps) probe.wait_at_start = pipeline_->wait_seconds();
    return;
  }
  probe.step_seconds += step_seconds;
  const int64_t n = probe.steps - kProbeWarmupSteps;
  // With the batches prepared between steps, the pipeline's wait is the time spent making them.
  const double batch_total = pipeline_->wait_seconds() - probe.wait_at_start;
  const double total = batch_total + probe.step_seconds;  // evals, checkpoints and logging left out
  if (n < kProbeMinSteps || (total < kProbeSeconds && n < kProbeMaxSteps)) return;
  probe.active = false;
  const double batch_seconds = batch_total / static_cast<double>(n);
  const double share = batch_total / std::max(total, 1e-9);
  const bool worker = batch_seconds >= kWorkerMinBatchSeconds && share >= kWorkerMinShare;
  if (worker) pipeline_->set_prefetch(kWorkerPrefetch);
  log_.info(
      "train data: {} (auto: a batch took {:.3f} ms, {:.1f}% of a step with its batch, over {} steps; set "
      "train_ds.prefetch to choose)",
      worker ? "prepared " + std::to_string(kWorkerPrefetch) + " batches ahead on a worker thread from step " +
                   std::to_string(step)
             : std::string("prepared between steps"),
      batch_seconds * 1e3, share * 100, n);
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
