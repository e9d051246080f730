// The Trainer's resuming and saving: which checkpoint a run resumes from, what it restores and
// checks, what a checkpoint holds, and kd eval's choice of checkpoint.
#include <cmath>
#include <filesystem>
#include <map>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/init_transform.h"
#include "trainer/common/error.h"
#include "trainer/context/error_context.h"
#include "trainer/data/pipeline.h"
#include "trainer/io/file_system.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer.h"
#include "trainer/optim/optimizer_state.h"
#include "trainer/run/data_parallel_internal.h"
#include "trainer/run/recorder_internal.h"
#include "trainer/run/run_state_internal.h"
#include "trainer/run/trainer.h"
#include "trainer/run/trainer_options.h"
#include "trainer/run/tuning_internal.h"
#include "trainer/run/workdir_internal.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/step/train_step.h"

namespace kd::train {
namespace {

namespace fs = std::filesystem;
using checkpoints::Checkpointer;
using checkpoints::CheckpointInfo;

// An intact checkpoint of another model: said as such, with what to do (never "damaged").
MismatchError does_not_fit(const CheckpointInfo& info, const std::string& workdir, const MismatchError& e,
                           const std::string& difference) {
  return MismatchError("the checkpoint of step " + std::to_string(info.step) +
                       " does not fit this experiment (it is intact, of the experiment before " + difference +
                       "): " + e.what() + ". Train this experiment in another workdir (e.g. --cfg.workdir=" + workdir +
                       "_2), or start one from this checkpoint with init_transform: {checkpoint: " + workdir +
                       ", strict: false}");
}

}  // namespace

void Trainer::resume_or_start() {
  // Rank 0 chooses the checkpoint: the newest that restores (one damaged or crafted beyond its
  // checksums is skipped for the one before it); in a data-parallel job every rank then
  // restores that one.
  RunState restored;
  std::optional<CheckpointInfo> latest;
  if (is_chief()) latest = resume_chief(restored);
  const int64_t step = parallel_->rank0_value(latest ? latest->step : -1, "choosing the checkpoint to resume from");
  if (!is_chief() && step >= 0) {
    const auto cannot_read = [&](const std::string& problem) {
      return CorruptionError("rank " + std::to_string(rank()) + " cannot read checkpoint " + std::to_string(step) +
                             ", which rank 0 resumes from, in \"" + checkpointer_->directory() + "\"" +
                             (problem.empty() ? std::string() : " (" + problem + ")") +
                             ". Every rank must see rank 0's workdir: put it on a shared file system");
    };
    latest = Checkpointer::choose(checkpointer_->probe(), step, [&](const CheckpointInfo& info) {
      if (!info.valid()) throw cannot_read(info.problem);
      restored = restore_checkpoint(info);
    });
    if (!latest) throw cannot_read("");
  }
  if (!latest) {
    if (options_->init_transform) {
      const std::string report = checkpoints::apply_init_transform(
          *options_->init_transform, *model_, &step_->optimizer().torch_optimizer(), model_->tied_weights());
      log_->info("init_transform: {}", report);
    }
    parallel_->broadcast_parameters();
    parallel_->seed_rank(options_->seed, state_.step);
    return;
  }
  // The checkpoint holds every rank's random states (CPU and GPU).
  parallel_->restore_random_states(restored.rank_rng.is_none() ? nullptr : &restored.rank_rng, options_->seed,
                                   state_.step);
  parallel_->broadcast_parameters();
  log_->info("resuming from step {} ({})", state_.step, latest->path);
}

std::optional<CheckpointInfo> Trainer::resume_chief(RunState& restored) {
  workdir_->lock();
  checkpointer_->clean_up_interrupted_saves();
  const auto found = checkpointer_->probe();
  const auto latest = Checkpointer::choose(
      found, std::nullopt,
      [&](const CheckpointInfo& info) {
        check_config_unchanged(io::posix_file_system()->read_file(info.path + "/config.yaml"), "the checkpoints in");
        restored = restore_checkpoint(info);
      },
      [&](const CheckpointInfo& info, const std::string& why) {
        log_->warn("checkpoint {} is damaged ({}); skipping it", info.path, why);
      });
  if (!latest) {
    if (!found.empty()) {
      throw CorruptionError("the workdir \"" + workdir() +
                            "\" holds checkpoints but none is valid (see above); "
                            "nothing was changed. Choose another workdir, e.g. --cfg.workdir=" +
                            workdir() + "_2");
    }
    check_fresh_workdir();
    return std::nullopt;
  }
  // Newer checkpoints that were skipped would outrank the new saves when old ones are pruned.
  for (const auto& info : found) {
    if (info.step > latest->step) {
      log_->warn("checkpoint {} set aside as {}", info.path, checkpointer_->set_aside(info.path));
    }
  }
  return latest;
}

void Trainer::check_fresh_workdir() {
  // A run stopped (killed, out of memory, power) before its first checkpoint: the same
  // experiment starts over and rewrites its logs; another one is refused (it must not
  // overwrite someone else's logs).
  const fs::path config = fs::path(workdir()) / "config.yaml";
  const fs::path jsonl = fs::path(workdir()) / "metrics.jsonl";
  // Only a run that cannot have reached a checkpoint yet: one logged past its first due
  // checkpoint (whose checkpoints were deleted, say) keeps its logs.
  const int64_t interval = checkpointer_->options().save_interval_steps;
  const int64_t first_due = interval > 0 ? std::min(interval, options_->num_train_steps) : options_->num_train_steps;
  int64_t logged = 0;
  if (fs::exists(jsonl)) {
    for (const auto& r : writers::read_jsonl(jsonl.string())) logged = std::max(logged, r.step);
  }
  const bool allow = options_->allow_config_change;
  if (fs::exists(config) && (logged >= first_due || allow)) {
    throw ConfigError("the workdir \"" + workdir() + "\" holds a run logged up to step " + std::to_string(logged) +
                      " without a checkpoint to resume from" + (allow ? " (and allow_config_change is set)" : "") +
                      "; nothing was changed. Choose another workdir, e.g. --cfg.workdir=" + workdir() +
                      "_2, or delete this one to start over");
  }
  if (fs::exists(config)) {
    check_config_unchanged(io::posix_file_system()->read_file(config.string()), "the run in");
    workdir_->start_over();
    log_->warn(
        "the workdir \"{}\" holds a run of this experiment that stopped before its first checkpoint; "
        "starting it over (its logs are rewritten)",
        workdir());
  } else if (fs::exists(jsonl)) {
    throw ConfigError("the workdir \"" + workdir() +
                      "\" already holds logs (metrics.jsonl) of a run without "
                      "config.yaml or a checkpoint; nothing was changed. Choose another workdir, e.g. --cfg.workdir=" +
                      workdir() + "_2, or delete this one to start over");
  }
}

RunState Trainer::restore_checkpoint(const CheckpointInfo& info) {
  checkpoints::Snapshot snapshot;
  snapshot.model = model_.get();
  snapshot.optimizer = &step_->optimizer().torch_optimizer();
  snapshot.ema = step_->optimizer().ema_params();
  restore_into(info, snapshot);
  RunState run = RunState::from_snapshot(snapshot, info.path);
  try {
    pipeline_->restore(snapshot.data);
  } catch (Error& e) {
    if (!options_->allow_config_change) {
      e.add_context(info.path);
      throw;
    }
    // The data changed with the experiment: it starts from its beginning.
    log_->warn("{}; the changed training data starts from its beginning", e.what());
    pipeline_->restore({});
  }
  state_ = step_->init();
  state_.step = snapshot.step;
  restore_run_state(run, info);
  return run;
}

RunState Trainer::run_state(Tree rank_rng) const {
  RunState run{.interval = interval_.merged.to_tree(),
               .interval_steps = interval_.steps,
               .rank_rng = std::move(rank_rng),
               .num_threads = options_->num_threads ? 0 : tuning_->num_threads(),  // what `auto` chose
               .training_seconds = training_seconds()};
  if (const GradScaler* scaler = step_->grad_scaler()) run.grad_scaler = scaler->state();
  run.callbacks = Tree::dict();
  for (std::size_t i = 0; i < callbacks_.size(); ++i) {
    Tree s = callbacks_[i]->state();
    if (!s.is_none()) run.callbacks.insert(callback_names_[i], std::move(s));
  }
  return run;
}

void Trainer::restore_run_state(const RunState& run, const CheckpointInfo& info) {
  restore_interval(info, run.interval, run.interval_steps);
  for (std::size_t i = 0; i < callbacks_.size(); ++i) {
    if (const Tree* s = run.callbacks.is_dict() ? run.callbacks.find(callback_names_[i]) : nullptr) {
      detail::with_context(("restoring callback " + callback_names_[i] + " from " + info.path).c_str(), "callback",
                           "callbacks", callback_names_[i], [&] { callbacks_[i]->restore(*s); });
    }
  }
  if (GradScaler* scaler = step_->grad_scaler()) {
    *scaler = GradScaler(scaler->options());  // a checkpoint of another precision has none: it starts afresh
    if (!run.grad_scaler.is_none()) scaler->restore(run.grad_scaler, info.path);
  }
  training_seconds_before_ = run.training_seconds;
  tuning_->resume_with(run.num_threads);
  // run.rank_rng: every rank's own, once all have restored (resume_or_start).
}

void Trainer::restore_interval(const CheckpointInfo& info, const Tree& interval, int64_t steps) {
  interval_.merged = AuxiliariesState{.auxiliaries = auxiliaries_};
  interval_.steps = steps;
  if (!is_chief()) return;  // the states saved are those of every rank, merged; rank 0 carries them on
  interval_.merged = AuxiliariesState::from_tree(interval, auxiliaries_);
  // States that do not fit the experiment's losses and metrics would fail at the next log.
  try {
    compute_scalars(merge(interval_.merged, interval_.merged));
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const std::string problem = info.path + ": its interval's loss and metric states do not fit the experiment: " +
                                what.substr(0, what.find('\n'));
    if (!options_->allow_config_change) throw CorruptionError(problem);
    // The losses or metrics changed with the experiment: the interval starts afresh.
    log_->warn("{}; the interval's states start afresh", problem);
    interval_.merged = AuxiliariesState{.auxiliaries = auxiliaries_};
    interval_.steps = 0;
  }
}

std::vector<std::string> Trainer::config_differences(const std::string& saved_yaml, const std::string& what) const {
  std::vector<std::pair<std::string, std::string>> before;
  try {
    before = config::Node::parse(saved_yaml, "saved").flatten();
  } catch (const ConfigError& e) {
    throw CorruptionError("the experiment saved with " + what + " \"" + workdir() + "\" cannot be read: " + e.what());
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
  return diffs;
}

void Trainer::check_config_unchanged(const std::string& saved_yaml, const std::string& what) const {
  if (options_->allow_config_change) return;
  const std::vector<std::string> diffs = config_differences(saved_yaml, what);
  if (diffs.empty()) return;
  std::string message = "the experiment differs from the one that trained " + what + " \"" + workdir() + "\":";
  for (const auto& d : diffs) message += "\n  " + d;
  throw ConfigError(message +
                    "\nResume with the same experiment, pass --cfg.allow_config_change=true to resume anyway, "
                    "or choose another workdir.");
}

void Trainer::restore_into(const CheckpointInfo& info, checkpoints::Snapshot& snapshot) const {
  try {
    checkpointer_->restore(info.path, snapshot);
  } catch (const MismatchError& e) {
    // Of another model (the experiment changed) it is intact; saved with this very experiment,
    // its tensors contradict it: damaged (crafted), and the one before it may do.
    const std::string saved = io::posix_file_system()->read_file(info.path + "/config.yaml");
    const std::vector<std::string> diffs = config_differences(saved, "checkpoint " + info.path + " in");
    if (diffs.empty()) throw CorruptionError(std::string(e.what()) + ", though it was saved with this experiment");
    throw does_not_fit(info, workdir(), e, diffs.front());
  }
}

void Trainer::save_checkpoint() {
  const auto start = std::chrono::steady_clock::now();
  callbacks_saw_evals_ = false;
  step_->check_deferred_non_finite();  // never a checkpoint of a non-finite update
  // In a job the interval's states of every rank are merged, and every rank's random states
  // gathered, for rank 0's checkpoint.
  interval_.merged = parallel_->merge(interval_.merged, auxiliaries_, "merging the training states for a checkpoint");
  const Tree rank_rng =
      parallel_->gather_random_states(options_->device, "gathering the random states for a checkpoint");
  const auto add_time = [&] {
    interval_.checkpoint_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  if (!is_chief()) {
    interval_.merged = AuxiliariesState{.auxiliaries = auxiliaries_};  // rank 0 holds the merged states from here on
    add_time();
    return;
  }
  checkpoints::Snapshot snapshot;
  snapshot.step = state_.step;
  snapshot.model = model_.get();
  snapshot.optimizer = &step_->optimizer().torch_optimizer();
  snapshot.ema = step_->optimizer().ema_params();
  snapshot.data = pipeline_->state();
  snapshot.config_yaml = experiment_.to_yaml();
  run_state(rank_rng).save_to(snapshot);
  const std::string path = checkpointer_->save(snapshot);
  add_time();
  for (auto& cb : callbacks_) cb->on_checkpoint(*this, state_.step, path);
}

void Trainer::restore_params(const CheckpointInfo& info) {
  if (!info.valid()) throw CorruptionError("checkpoint " + info.path + " is damaged: " + info.problem);
  checkpoints::Snapshot snapshot;
  snapshot.model = model_.get();
  snapshot.ema = step_->optimizer().ema_params();
  restore_into(info, snapshot);
  state_ = step_->init();
  state_.step = snapshot.step;
}

int64_t Trainer::evaluate_checkpoint(std::optional<int64_t> step) {
  restore_for_evaluation(step);
  open_workdir(nullptr, /*write_config=*/false);
  for (auto& evaluator : evaluators_) run_eval(*evaluator);
  recorder_->flush();
  return state_.step;
}

void Trainer::restore_for_evaluation(std::optional<int64_t> step) {
  // The checkpoint of `step`, or the newest that restores; rank 0 chooses for the job.
  const auto restore = [&](const CheckpointInfo& info) { restore_params(info); };
  std::optional<CheckpointInfo> chosen;
  std::exception_ptr failed;  // rank 0's error with the checkpoint asked for, raised after the others heard of it
  if (is_chief()) {
    const auto skip = [&](const CheckpointInfo& info, const std::string& why) {
      log_->warn("checkpoint {} is damaged ({}); skipping it", info.path, why);
    };
    try {
      chosen = checkpointer_->choose(step, restore, skip);
    } catch (const Error&) {
      if (!step) throw;
      failed = std::current_exception();
    }
  }
  const int64_t agreed = parallel_->rank0_value(failed   ? -2
                                                : chosen ? chosen->step
                                                         : -1,
                                                "choosing the checkpoint to evaluate");
  if (!is_chief() && agreed == -2) throw CorruptionError("rank 0 could not restore the checkpoint (its log says why)");
  if (!is_chief() && agreed >= 0) {
    chosen = checkpointer_->choose(agreed, restore);
    if (!chosen)
      throw CorruptionError("rank " + std::to_string(rank()) + " cannot find checkpoint " + std::to_string(agreed));
  }
  if (failed) std::rethrow_exception(failed);
  if (!chosen) {
    throw ConfigError(step ? "no checkpoint of step " + std::to_string(*step) + " in \"" + checkpointer_->directory() +
                                 "\""
                           : "no valid checkpoint in \"" + checkpointer_->directory() + "\"");
  }
}

}  // namespace kd::train
