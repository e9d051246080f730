// The Trainer's intra-op threads: `num_threads: auto` measures, for the model at hand, a
// training pass (forward and backward on the first batch) on 1, 2, 4, ... and all of this
// rank's cores, in blocks of passes per count, and keeps every core unless fewer are clearly
// faster; the measuring leaves no trace (random states, buffers and gradients are put back). A
// resumed run keeps the count its start chose, so its arithmetic (parallel reductions split by
// thread) stays the uninterrupted run's. The data worker runs only where a core is left over,
// and with `train_ds.prefetch: auto` only where the first steps show that it pays.
#include <algorithm>
#include <chrono>
#include <limits>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "trainer/checkpoints/random_states.h"
#include "trainer/common/clock.h"
#include "trainer/context/context.h"
#include "trainer/data/pipeline.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer.h"
#include "trainer/run/trainer.h"
#include "trainer/run/trainer_options.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/step/train_step.h"

namespace kd::train {
namespace {

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

void Trainer::settle_threads(bool measure) {
  if (num_threads_ == 0) {
    if (resumed_num_threads_ > 0 && resumed_num_threads_ <= cores_for_rank()) {
      num_threads_ = resumed_num_threads_;
      log_->info("intra-op threads: {} (auto: as the run chose when it started)", num_threads_);
    } else if (measure) {
      // The worker, preparing its first batches, would take a core from the passes measured.
      const int64_t prefetch = pipeline_->options().prefetch;
      pipeline_->set_prefetch(0);
      num_threads_ = measure_num_threads();
      pipeline_->set_prefetch(prefetch);
    } else {
      num_threads_ = cores_for_rank();
    }
  }
  torch::set_num_threads(static_cast<int>(num_threads_));
  // With every core computing, a worker preparing batches alongside would take one from the
  // threads the step waits for: the batches are then prepared between steps instead.
  const int64_t cores = cores_for_rank();
  if (!prefetch_configured_ && options_->device.is_cpu()) {
    prefetch_probe_ = {};
    if (num_threads_ >= cores) {
      pipeline_->set_prefetch(0);
      log_->info(
          "train data: prepared between steps ({} intra-op thread{} on {} core{}; set train_ds.prefetch to "
          "prepare them on a worker thread anyway)",
          num_threads_, num_threads_ == 1 ? "" : "s", cores, cores == 1 ? "" : "s");
    } else {
      // A core is left over: the first steps, their batches made between them, tell whether a
      // worker pays (a worker started by an earlier decision is stopped to time them again).
      if (pipeline_->options().prefetch > 0) pipeline_->set_prefetch(0);
      prefetch_probe_.active = true;
    }
  }
}

void Trainer::settle_prefetch(double step_seconds) {
  PrefetchProbe& probe = prefetch_probe_;
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
  log_->info(
      "train data: {} (auto: a batch took {:.3f} ms, {:.1f}% of a step with its batch, over {} steps; set "
      "train_ds.prefetch to choose)",
      worker ? "prepared " + std::to_string(kWorkerPrefetch) + " batches ahead on a worker thread from step " +
                   std::to_string(state_.step)
             : std::string("prepared between steps"),
      batch_seconds * 1e3, share * 100, n);
}

int64_t Trainer::measure_num_threads() {
  const int64_t cores = cores_for_rank();
  std::vector<int64_t> candidates;
  for (int64_t t = 1; t < cores; t *= 2) candidates.push_back(t);
  candidates.push_back(cores);

  const Tree batch = data::to_device(pipeline_->batch_at(pipeline_->state()), options_->device);
  // What a training pass changes besides gradients: random states (dropout) and buffers
  // (BatchNorm statistics), put back afterwards.
  const Tree random = checkpoints::random_states(checkpoints::generator_devices());
  std::vector<torch::Tensor> buffers, saved;
  for (const auto& b : model_->buffers()) {
    buffers.push_back(b);
    saved.push_back(b.detach().clone());
  }
  if (!model_->is_training()) model_->train();
  const auto pass = [&] {
    const Context ctx = forward_with_loss(*model_, *auxiliaries_, Context::from_state_and_batch(state_, batch),
                                          /*record_interms=*/false, step_->autocast());
    if (ctx.loss_total.is_none()) throw ConfigError("no training loss is configured: set train_losses");
    ctx.loss_total.tensor().backward();
  };
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
  step_->optimizer().torch_optimizer().zero_grad();
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
  }
  checkpoints::set_random_states(random);

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
  log_->info("intra-op threads: {} (auto; a forward and backward pass measured: {})", candidates[chosen], timings);
  return candidates[chosen];
}

}  // namespace kd::train
