#include "trainer/run/trainer.h"
#include "trainer/run/trainer_options.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/random_states.h"
#include "trainer/common/clock.h"
#include "trainer/common/error.h"
#include "trainer/context/error_context.h"
#include "trainer/data/pipeline.h"
#include "trainer/evals/evaluator.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer.h"
#include "trainer/run/data_parallel_internal.h"
#include "trainer/run/profiler_internal.h"
#include "trainer/run/progress_internal.h"
#include "trainer/run/recorder_internal.h"
#include "trainer/run/stop_signals_internal.h"
#include "trainer/run/tuning_internal.h"
#include "trainer/run/workdir_internal.h"
#include "trainer/runtime/memory.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/step/train_step.h"

namespace kd::train {

Trainer::~Trainer() {
  if (console_) console_->clear();  // an error is printed on a line of its own
}

const std::string& Trainer::workdir() const { return options_->workdir; }
int64_t Trainer::num_threads() const { return tuning_->num_threads(); }
int Trainer::rank() const { return parallel_->rank(); }
int Trainer::world_size() const { return parallel_->world_size(); }

void Trainer::train() {
  require_training_data("train()");
  resume_or_start();
  settle_threads();
  Loop loop = start_loop();
  // A callback may stop the run before its first step (EarlyStopping resumed after it stopped);
  // rank 0 decides for a job.
  const bool stop_at_start = parallel_->rank0_value(stop_reason_.empty() ? 0 : 1, "agreeing to stop at the start") != 0;
  StopSignals signals(options_->requeue_signal);
  start_clock_and_initial_evals(loop);
  while (!stop_at_start && state_.step < loop.last_step && !parallel_->stop_requested(signals.received() != 0)) {
    if (!train_step(loop)) break;
    after_step(loop);
  }
  end_loop(loop, stop_at_start, signals.received());
}

Trainer::Loop Trainer::start_loop() {
  Loop loop;
  loop.resumed = state_.step > 0;
  loop.first_step = state_.step;
  loop.last_saved = loop.resumed ? state_.step : -1;  // a resumed step's checkpoint exists
  const int64_t n = options_->num_train_steps;
  loop.last_step = options_->stop_after_steps > 0 ? std::min(options_->stop_after_steps, n) : n;
  if (loop.resumed) {
    open_workdir(nullptr);
    workdir_->truncate_after(state_.step);  // those steps are logged again
  }
  for (auto& cb : callbacks_) cb->on_train_start(*this);
  return loop;
}

void Trainer::start_clock_and_initial_evals(Loop& loop) {
  start_ = Clock::now();
  training_ = true;
  interval_.start = start_;
  interval_.wait_at_start = pipeline_->wait_seconds();
  // Evals due at step 0 see the initial params; they are written once the workdir opens (after
  // the first step, which records the run's start).
  if (loop.resumed) return;
  for (auto& evaluator : evaluators_) {
    if (evaluator->should_run(0, false)) loop.initial_evals.emplace_back(evaluator.get(), evaluate(*evaluator));
  }
}

void Trainer::record_initial_evals(Loop& loop) {
  for (auto& [evaluator, result] : loop.initial_evals) {
    const writers::Scalars values = record_eval(*evaluator, 0, result.first, result.second);
    for (auto& cb : callbacks_) cb->on_eval_end(*this, evaluator->name(), 0, values);
  }
  loop.initial_evals.clear();
}

bool Trainer::train_step(Loop& loop) {
  if (profiler_) profiler_->before_step(state_.step);
  std::optional<Tree> batch = pipeline_->next();
  if (!batch) {  // not expected: the run's length was bounded by the data's (see build_data)
    log_->warn("the training data ended at step {}, before step {}", state_.step, options_->num_train_steps);
    return false;
  }
  const bool first = state_.step == loop.first_step && !loop.resumed;
  const bool summarize =
      (state_.step + 1) % options_->log_summaries_every == 0 || state_.step + 1 == options_->num_train_steps;
  const int64_t skipped_before = step_->skipped_steps();
  Context first_context;
  const auto step_start = tuning_->probing() ? Clock::now() : Clock::time_point();
  auto [next, aux] = step_->step(state_, data::to_device(*batch, options_->device),
                                 {.context_out = first ? &first_context : nullptr,
                                  .with_summaries = summarize && !auxiliaries_->summaries.empty()});
  state_ = std::move(next);
  if (tuning_->probing()) tuning_->after_step(seconds_since(step_start), state_.step);
  if (profiler_) profiler_->after_step(state_.step - 1);
  parallel_->broadcast_buffers();  // BatchNorm statistics: rank 0's everywhere, for evals and checkpoints
  if (step_->skipped_steps() != skipped_before) {
    log_->warn("step {}: non-finite loss, update skipped (nan_policy: skip_step)", state_.step - 1);
  }
  if (summarize && !aux.summary_states.empty()) {
    open_workdir(first ? &first_context : nullptr);
    record_summaries(aux);
  }
  interval_.merged = merge(interval_.merged, aux);
  ++interval_.steps;
  if (state_.step == loop.first_step + 1) {  // the first step worked
    open_workdir(first ? &first_context : nullptr);
    record_initial_evals(loop);
  }
  return true;
}

void Trainer::after_step(Loop& loop) {
  // Logged at fixed steps only (and at the very end), so a stopped and resumed run logs
  // exactly what an uninterrupted one does; the interval's states are in its checkpoint.
  const int64_t step = state_.step;
  const bool log_step = step % options_->log_metrics_every == 0 || step == options_->num_train_steps;
  if (log_step) step_->check_deferred_non_finite();  // an accelerator's loss checks, read here
  const writers::Scalars logged = log_step ? log_train_metrics() : writers::Scalars();
  for (auto& cb : callbacks_) cb->on_step_end(*this, step, log_step ? &logged : nullptr);
  // The checkpoint first: an eval that fails must not cost the steps trained since the last one.
  if (loop.last_saved != step && (checkpointer_->should_save(step) || step == loop.last_step)) {
    save_checkpoint();
    loop.last_saved = step;
  }
  if (run_evals(step == options_->num_train_steps, loop.last_saved == step)) loop.last_saved = step;
  if (loop.last_saved == step) save_again_after_evals();
  recorder_->progress(step, loop.last_step, step - loop.first_step, seconds_since(start_), logged);
  const double time_limit = options_->stop_after_seconds;
  if (time_limit > 0 && stop_reason_.empty() && seconds_since(start_) >= time_limit) {
    request_stop("stop_after_time " + format_duration(time_limit) + " reached");
    stop_for_time_ = true;
  }
}

void Trainer::end_loop(Loop& loop, bool stop_at_start, int signal) {
  if (profiler_) profiler_->finish(state_.step - 1);
  open_workdir(nullptr);
  record_initial_evals(loop);
  recorder_->clear();
  if (stop_at_start && stop_reason_.empty()) stop_reason_ = "rank 0 stopped the run at its start";
  const bool stopped_early = state_.step < loop.last_step && !stop_reason_.empty() && signal == 0;
  if (loop.last_saved != state_.step) save_checkpoint();
  loop.last_saved = state_.step;
  // A run a callback ended is done: it gets the evals of its end (once, by the process that
  // trained its last step). A time limit leaves them to the resumed run.
  // Rank 0 decides for a job (the evals are collective; a callback may have asked on one rank).
  const bool final_evals = stopped_early && !stop_for_time_ && state_.step > loop.first_step;
  if (parallel_->rank0_value(final_evals ? 1 : 0, "agreeing on the final evals") != 0) {
    run_evals(/*last=*/true, /*saved=*/true, /*only_end=*/true);
    save_again_after_evals();
  }
  finish(signal);
}

void Trainer::require_training_data(const char* what) const {
  if (!pipeline_)
    throw Error(std::string("Trainer::") + what + " needs the training data: build the Trainer with Purpose::kTrain");
}

void Trainer::request_stop(const std::string& reason) {
  if (stop_reason_.empty()) stop_reason_ = reason;
  parallel_->request_stop();
}

std::vector<std::string> Trainer::eval_names() const {
  std::vector<std::string> out;
  for (const auto& e : evaluators_) out.push_back(e->name());
  return out;
}

void Trainer::record_summaries(AuxiliariesState& aux) {
  // Summaries show the batch of the step they are recorded at (all ranks' slices of it).
  recorder_->summaries(state_.step, "train", parallel_->merge(aux, auxiliaries_, "merging the summaries"));
  aux.summary_states = Tree();
}

writers::Scalars Trainer::log_train_metrics() {
  const std::vector<std::string> skipped = pipeline_->take_skipped();
  for (const std::string& s : skipped) log_->warn("train data: left out {} (train_ds.on_error: skip)", s);
  const IntervalTiming timing{
      .steps = interval_.steps,
      .seconds = seconds_since(interval_.start),
      .data_wait_seconds = pipeline_->wait_seconds() - interval_.wait_at_start,
      .checkpoint_seconds = interval_.checkpoint_seconds,
      .eval_seconds = interval_.eval_seconds,
      .batch_size = pipeline_->options().batch_size,
      .world_size = world_size(),
      .training_seconds = training_seconds(),
      .device_peak_bytes =
          options_->device.is_cuda() ? runtime::peak_device_memory_bytes(options_->device.index()) : -1,
      .skipped_examples = pipeline_->options().skip_unreadable ? static_cast<int64_t>(skipped.size()) : -1};
  writers::Scalars values =
      compute_scalars(parallel_->merge(interval_.merged, auxiliaries_, "merging the training metrics"));
  for (const auto& [name, value] : step_->optimizer().schedules(state_.step - 1)) {
    values.emplace_back("schedules/" + name, value);
  }
  for (const auto& [name, schedule] : schedules_)
    values.emplace_back("schedules/" + name, (*schedule)(state_.step - 1));
  values = recorder_->train_metrics(state_.step, std::move(values), timing);
  interval_ = Interval{.start = Clock::now(), .wait_at_start = pipeline_->wait_seconds()};
  return values;
}

bool Trainer::run_evals(bool last, bool saved, bool only_end) {
  for (auto& evaluator : evaluators_) {
    if (!evaluator->should_run(state_.step, last)) continue;
    if (only_end && evaluator->should_run(state_.step, false)) continue;  // it ran at this step
    const writers::Scalars values = run_eval(*evaluator);
    for (auto& cb : callbacks_) cb->on_eval_end(*this, evaluator->name(), state_.step, values);
    callbacks_saw_evals_ = true;
    // A new best is kept as a checkpoint. Rank 0 decides for the job (its timings differ).
    const bool best = checkpointer_->track_best(state_.step, evaluator->name(), values);
    if (parallel_->rank0_value(best ? 1 : 0, "agreeing on the best checkpoint") == 0) continue;
    if (!saved) save_checkpoint();
    saved = true;
    if (is_chief()) checkpointer_->write_best();
  }
  return saved;
}

void Trainer::save_again_after_evals() {
  if (!callbacks_saw_evals_) return;
  const bool stateful =
      std::any_of(callbacks_.begin(), callbacks_.end(), [](const CallbackPtr& cb) { return !cb->state().is_none(); });
  if (stateful) save_checkpoint();
}

writers::Scalars Trainer::run_eval(evals::Evaluator& evaluator) {
  const auto [result, seconds] = evaluate(evaluator);
  return record_eval(evaluator, state_.step, result, seconds);
}

std::pair<AuxiliariesState, double> Trainer::evaluate(evals::Evaluator& evaluator) {
  const auto start = Clock::now();
  AuxiliariesState result = detail::with_context(
      ("evaluating at step " + std::to_string(state_.step)).c_str(), "eval", "evals", evaluator.name(), [&] {
        std::optional<optim::Optimizer::EmaParamsGuard> ema;
        if (evaluator.use_ema()) ema.emplace(step_->optimizer());
        return parallel_->merge(evaluator.evaluate(*step_, state_, options_->device), evaluator.auxiliaries(),
                                "merging eval " + evaluator.name());
      });
  const double seconds = seconds_since(start);
  for (const std::string& skipped : evaluator.take_skipped()) {
    log_->warn("eval {}: left out {} (ds.on_error: skip)", evaluator.name(), skipped);
  }
  interval_.eval_seconds += seconds;
  return {std::move(result), seconds};
}

double Trainer::training_seconds() const {
  return training_seconds_before_ + (training_ ? seconds_since(start_) : 0.0);
}

writers::Scalars Trainer::record_eval(evals::Evaluator& evaluator, int64_t step, const AuxiliariesState& result,
                                      double seconds) {
  return recorder_->eval(step, evaluator.name(), result, seconds);
}

void Trainer::finish(int signal) {
  recorder_->flush();
  for (auto& cb : callbacks_) cb->on_train_end(*this, state_.step);
  if (!stop_reason_.empty() && signal == 0) {
    log_->info("stopped at step {} of {}: {}; checkpoint saved.{}", state_.step, options_->num_train_steps,
               stop_reason_, stop_for_time_ ? " Run the same command again to resume." : "");
  } else if (parallel_->stop_requested(signal != 0)) {
    if (signal != 0 && signal == options_->requeue_signal) {
      requeue();
    } else if (signal != 0) {
      log_->info("stopped by signal {} at step {}; checkpoint saved. Run the same command again to resume.", signal,
                 state_.step);
    } else {
      log_->info(
          "stopped at step {}: another rank was asked to stop; checkpoint saved. Run the same command "
          "again to resume.",
          state_.step);
    }
  } else {
    log_->info("done: step {} of {} in {}", state_.step, options_->num_train_steps,
               format_duration(seconds_since(start_)));
  }
  log_->flush();
}

void Trainer::open_workdir(const Context* first_context, bool write_config) {
  if (workdir_->is_open()) return;
  const std::string yaml = experiment_.to_yaml();
  workdir_->open(yaml, experiment_.child("workdir").where(), write_config);
  // Once at the start: the experiment, the parameter table and every Context path.
  if (first_context && is_chief()) recorder_->record_start(*first_context, yaml, describe_model());
}

void Trainer::settle_threads(bool measure) {
  // A training pass on the next batch for `auto` to time; what passes change besides gradients
  // (random states, BatchNorm buffers) is put back afterwards.
  struct Saved {
    Tree batch, random;
    std::vector<torch::Tensor> buffers, values;
  };
  std::optional<Saved> saved;
  const auto pass = [&] {
    if (!saved) {
      saved.emplace();
      saved->batch = data::to_device(pipeline_->batch_at(pipeline_->state()), options_->device);
      saved->random = checkpoints::random_states(checkpoints::generator_devices());
      for (const auto& b : model_->buffers()) {
        saved->buffers.push_back(b);
        saved->values.push_back(b.detach().clone());
      }
      if (!model_->is_training()) model_->train();
    }
    const Context ctx = forward_with_loss(*model_, *auxiliaries_, Context::from_state_and_batch(state_, saved->batch),
                                          /*record_interms=*/false, step_->autocast());
    if (ctx.loss_total.is_none()) throw ConfigError("no training loss is configured: set train_losses");
    ctx.loss_total.tensor().backward();
  };
  tuning_->settle(measure, pass);
  if (!saved) return;
  step_->optimizer().clear_gradients();
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < saved->buffers.size(); ++i) saved->buffers[i].copy_(saved->values[i]);
  }
  checkpoints::set_random_states(saved->random);
}

Context Trainer::inspect() {
  require_training_data("inspect()");
  settle_threads();
  std::optional<Tree> batch = pipeline_->next();
  if (!batch) throw Error("the training data is empty");
  Context ctx;
  step_->step(state_, data::to_device(*batch, options_->device), {.context_out = &ctx});
  return ctx;
}

std::string Trainer::describe_model() const { return model_table(*model_); }

}  // namespace kd::train
