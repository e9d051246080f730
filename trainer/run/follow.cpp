// kd eval --follow: the Trainer's standalone evaluator (Kauldron's StandaloneEveryCheckpoint and
// StandaloneLastCheckpoint), which evaluates a run's checkpoints as they appear, beside the
// process that trains it.
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/clock.h"
#include "trainer/common/error.h"
#include "trainer/evals/evaluator.h"
#include "trainer/run/recorder_internal.h"
#include "trainer/run/stop_signals_internal.h"
#include "trainer/run/trainer.h"
#include "trainer/run/trainer_options.h"
#include "trainer/run/workdir_internal.h"

namespace kd::train {
namespace {

using Standalone = evals::Evaluator::Standalone;

}  // namespace

void Trainer::evaluate_and_record(const std::vector<evals::Evaluator*>& evaluators) {
  // Evaluated first, written after: the writers' lock is held only for the writing.
  std::vector<std::pair<AuxiliariesState, double>> results;
  for (auto* evaluator : evaluators) results.push_back(evaluate(*evaluator));
  workdir_->begin_writes();
  try {
    for (std::size_t i = 0; i < evaluators.size(); ++i) {
      record_eval(*evaluators[i], state_.step, results[i].first, results[i].second);
    }
  } catch (...) {
    workdir_->end_writes();
    throw;
  }
  workdir_->end_writes();
}

bool Trainer::restore_newest_after(int64_t after, std::set<int64_t>& skipped) {
  for (const auto& info : checkpointer_->probe_after(after)) {  // the newest first
    if (skipped.count(info.step)) continue;
    if (!info.valid()) {
      // Gone since it was listed: pruned while it was read (max_to_keep renames it away whole),
      // not damaged.
      if (!std::filesystem::exists(info.path)) {
        log_->warn("checkpoint {} was deleted before it could be evaluated (checkpointer.max_to_keep)", info.path);
      } else {
        log_->warn("checkpoint {} is damaged ({}); skipping it", info.path, info.problem);
      }
      skipped.insert(info.step);
      continue;
    }
    try {
      restore_params(info);
    } catch (const std::exception& e) {
      if (!std::filesystem::exists(info.path)) {
        log_->warn("checkpoint {} was deleted before it could be evaluated (checkpointer.max_to_keep)", info.path);
      } else {
        log_->warn("checkpoint {} cannot be evaluated ({}); skipping it", info.path, e.what());
      }
      skipped.insert(info.step);
      continue;
    }
    return true;
  }
  return false;
}

std::vector<int64_t> Trainer::follow_checkpoints(const FollowOptions& follow) {
  require_training_data("follow_checkpoints()");  // its end is num_train_steps, which the data may set
  if (world_size() > 1) {
    throw ConfigError("kd eval --follow runs as one process: start it without the torchrun variables");
  }
  std::vector<evals::Evaluator*> every, last;
  for (auto& evaluator : evaluators_) {
    if (evaluator->standalone() == Standalone::kEveryCheckpoint) every.push_back(evaluator.get());
    if (evaluator->standalone() == Standalone::kLastCheckpoint) last.push_back(evaluator.get());
  }
  if (every.empty() && last.empty()) {
    throw ConfigError(
        "kd eval --follow runs the evals whose run is {type: StandaloneEveryCheckpoint} (each new checkpoint) or "
        "{type: StandaloneLastCheckpoint} (the final one), and the experiment of \"" +
        workdir() +
        "\" has none. Give an eval one of them in the experiment you train (the training run then leaves it to "
        "kd eval --follow), e.g. evals: {test: {run: {type: StandaloneEveryCheckpoint}, ds: ...}}");
  }
  workdir_->open_for_follow();
  StopSignals signals;
  const int64_t final_step = options_->num_train_steps;  // 0: the data bounds the run
  std::vector<int64_t> evaluated;
  std::set<int64_t> skipped;  // damaged or gone: warned about once
  bool seen_training = false;
  auto idle_since = Clock::now();
  while (signals.received() == 0) {
    // Whether training runs is read before the checkpoints: a run seen ended has saved its last.
    const bool running = Workdir::training_running(workdir());
    seen_training = seen_training || running;
    const int64_t after = evaluated.empty() ? -1 : evaluated.back();
    const bool restored = restore_newest_after(after, skipped);
    if (restored) {
      if (!every.empty()) evaluate_and_record(every);
      evaluated.push_back(state_.step);
      idle_since = Clock::now();
      if (final_step > 0 && state_.step >= final_step) break;  // the run's final checkpoint
      continue;
    }
    if (seen_training && !running) {
      log_->info("the training process has ended");
      break;
    }
    if (!running && seconds_since(idle_since) >= follow.timeout_seconds) {
      log_->info("no training process holds the workdir and no new checkpoint appeared in {} s; stopping",
                 follow.timeout_seconds);
      break;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(follow.poll_seconds));
  }
  if (signals.received() != 0) {
    log_->info("stopped by signal {} after evaluating {} checkpoint{}", signals.received(), evaluated.size(),
               evaluated.size() == 1 ? "" : "s");
    return evaluated;
  }
  if (evaluated.empty()) {
    throw ConfigError("no checkpoint to evaluate appeared in \"" + checkpointer_->directory() + "\" (waited " +
                      std::to_string(static_cast<int64_t>(follow.timeout_seconds)) +
                      " s with no training process holding the workdir; --timeout sets the wait)");
  }
  if (!last.empty()) evaluate_and_record(last);  // the model holds the newest checkpoint
  log_->info("followed the run to step {}: {} checkpoint{} evaluated", evaluated.back(), evaluated.size(),
             evaluated.size() == 1 ? "" : "s");
  return evaluated;
}

}  // namespace kd::train
