// The Trainer's construction: the experiment's components built from their sections and
// checked against each other (the batch over the ranks, the data's length, the threads).
#include <unistd.h>

#include <algorithm>
#include <thread>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/data/pipeline.h"
#include "trainer/evals/evaluator.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer.h"
#include "trainer/run/data_parallel_internal.h"
#include "trainer/run/profiler_internal.h"
#include "trainer/run/progress_internal.h"
#include "trainer/run/recorder_internal.h"
#include "trainer/run/trainer.h"
#include "trainer/run/trainer_options.h"
#include "trainer/run/tuning_internal.h"
#include "trainer/run/workdir_internal.h"
#include "trainer/runtime/blas.h"
#include "trainer/runtime/cores.h"
#include "trainer/runtime/memory.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/step/train_step.h"

namespace kd::train {
namespace {

int64_t num_parameters(models::Model& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

}  // namespace

Trainer::Trainer(const config::Node& cfg, std::shared_ptr<spdlog::logger> log, Purpose purpose)
    : experiment_(cfg),
      options_(std::make_unique<TrainerOptions>(TrainerOptions::from_config(cfg))),
      parallel_(DataParallel::from_environment()) {
  runtime::keep_freed_memory();  // before the data and the model allocate
  auto logger = make_run_logger(std::move(log));
  log_ = std::move(logger.log);
  console_ = std::move(logger.console);
  if (!is_chief()) log_->set_level(spdlog::level::warn);  // rank 0 reports for the job
  options_->device =
      parallel_->rank_device(options_->device, cfg.has("device") ? cfg.child("device").where() : cfg.where());
  checkpointer_ =
      std::make_unique<checkpoints::Checkpointer>(options_->workdir + "/checkpoints", options_->checkpointer);
  workdir_ = std::make_unique<Workdir>(options_->workdir, options_->writer, log_, is_chief());
  recorder_ =
      std::make_unique<Recorder>(log_, console_, console_ && is_chief() && isatty(STDERR_FILENO) != 0, *workdir_);

  torch::manual_seed(static_cast<uint64_t>(options_->seed));
  model_ = models::registry().create(cfg.child("model"));
  model_->to(options_->device);
  const auto losses = cfg.find("train_losses");
  if (!losses || losses->is_null() || losses->size() == 0) {
    throw ConfigError(cfg.where() +
                      ": the experiment needs train_losses (e.g. {xent: {type: SoftmaxCrossEntropyWithIntLabels}})");
  }
  auxiliaries_ = std::make_shared<Auxiliaries>(
      build_auxiliaries(cfg.section("train_losses"), cfg.section("train_metrics"), cfg.section("train_summaries")));
  step_ = std::make_unique<TrainStep>(model_, cfg.child("optimizer"), auxiliaries_);
  step_->set_nan_policy(options_->nan_policy);
  step_->set_autocast({.precision = options_->precision, .device = options_->device.type()});
  if (options_->precision == Precision::kFp16) step_->set_grad_scaler(options_->grad_scaler);
  if (purpose == Purpose::kTrain) {
    build_data(cfg);
  } else if (purpose == Purpose::kDescribe) {
    data::PipelineOptions options;
    options.read_data = false;
    const data::Pipeline described(cfg.child("train_ds"), options_->seed, options);
  } else {
    cfg.has("train_ds");  // known, and left unread
  }
  build_components(cfg, purpose != Purpose::kDescribe);
  tuning_ = std::make_unique<Tuning>(
      Tuning::Options{.num_threads = options_->num_threads,
                      .prefetch_configured = pipeline_ && !data::prefetch_is_auto(cfg.child("train_ds")),
                      .on_cpu = options_->device.is_cpu(),
                      .cores = cores_for_rank(),
                      .num_parameters = num_parameters(*model_)},
      pipeline_.get(), *log_);
  cfg.has("references");  // the references resolved (config/experiment.h), kept for reruns
  cfg.check_unknown_keys();

  state_ = step_->init();
  if (const int64_t threads = tuning_->num_threads(); threads > 0) {
    log_->info("experiment: {} parameters, device {}, precision {}, {} intra-op thread{}{}", num_parameters(*model_),
               options_->device.str(), precision_name(options_->precision), threads, threads == 1 ? "" : "s",
               options_->num_threads ? "" : " (auto)");
  } else {
    log_->info(
        "experiment: {} parameters, device {}, precision {}, intra-op threads chosen when training starts (auto)",
        num_parameters(*model_), options_->device.str(), precision_name(options_->precision));
  }
  if (pipeline_) {
    log_->info("train data: {}", pipeline_->description());
    for (const auto& warning : pipeline_->warnings()) log_->warn("train data: {}", warning);
  }
  for (const auto& evaluator : evaluators_) {
    for (const auto& warning : evaluator->data_warnings()) log_->warn("evals.{} data: {}", evaluator->name(), warning);
  }
  log_->info("BLAS: {}", runtime::describe_blas());
  log_->info("host memory: {}", runtime::keep_freed_memory());
  if (auto warning = runtime::blas_warning()) log_->warn("{}", *warning);
  if (purpose == Purpose::kDescribe) return;
  parallel_->join(options_->distributed, options_->device, *step_, pipeline_ ? pipeline_->options().batch_size : 0,
                  *log_);
}

void Trainer::build_data(const config::Node& cfg) {
  const int ranks = world_size();
  data::PipelineOptions shard;
  shard.num_shards = ranks;
  shard.shard_index = rank();
  // `auto` on the CPU: batches are prepared between steps until the first steps have shown
  // whether a worker thread pays (Tuning); on an accelerator, a worker from the start.
  if (data::prefetch_is_auto(cfg.child("train_ds")) && options_->device.is_cpu()) shard.prefetch = 0;
  pipeline_ = std::make_unique<data::Pipeline>(cfg.child("train_ds"), options_->seed, shard);
  const auto& o = pipeline_->options();
  const std::string where = cfg.child("train_ds").where();
  if (o.batch_size % ranks != 0) {
    throw ConfigError(cfg.child("train_ds").child("batch_size").where() + ": batch_size " +
                      std::to_string(o.batch_size) + " (the global batch) must split evenly over the " +
                      std::to_string(ranks) + " ranks; use a multiple of " + std::to_string(ranks));
  }
  if (const int64_t k = step_->optimizer().accumulate_steps(); k > 1 && (o.batch_size / ranks) % k != 0) {
    throw ConfigError(cfg.child("train_ds").child("batch_size").where() + ": each of the " + std::to_string(ranks) +
                      " ranks gets " + std::to_string(o.batch_size / ranks) +
                      " examples of the global batch, which optimizer.accumulate_steps " + std::to_string(k) +
                      " cannot split evenly; use a batch_size divisible by " + std::to_string(ranks * k));
  }
  // The end of the data is the end of training (final evals and checkpoint included).
  int64_t& num_train_steps = options_->num_train_steps;
  if (o.num_epochs > 0) {
    const int64_t data_steps = o.num_epochs * pipeline_->batches_per_epoch();
    if (data_steps <= 0) {
      throw ConfigError(where + ": the training data gives no batch: " + std::to_string(pipeline_->num_examples()) +
                        " examples, batch_size " + std::to_string(o.batch_size) +
                        (o.drop_remainder ? " with drop_remainder: true" : ""));
    }
    if (num_train_steps == 0 || data_steps < num_train_steps) {
      if (num_train_steps > 0) {
        log_->info(
            "the training data ends after {} steps ({} epoch{} of {} batches), before num_train_steps {}: "
            "training ends there",
            data_steps, o.num_epochs, o.num_epochs == 1 ? "" : "s", pipeline_->batches_per_epoch(), num_train_steps);
      }
      num_train_steps = data_steps;
    }
  } else if (num_train_steps == 0) {
    throw ConfigError(cfg.where() + ": set num_train_steps, or train_ds.num_epochs to train for a number of epochs");
  }
  if (ranks > 1 && !o.drop_remainder && pipeline_->num_examples() % o.batch_size != 0) {
    throw ConfigError(where + ": drop_remainder: false leaves a last batch of " +
                      std::to_string(pipeline_->num_examples() % o.batch_size) + " examples that " +
                      std::to_string(ranks) + " ranks cannot split evenly; use drop_remainder: true");
  }
}

void Trainer::build_components(const config::Node& cfg, bool read_data) {
  const config::Node schedules = cfg.section("schedules");
  for (const auto& name : schedules.keys()) schedules_.emplace_back(name, optim::make_schedule(schedules.child(name)));
  const config::Node evals = cfg.section("evals");
  for (const auto& name : evals.keys()) {
    evaluators_.push_back(std::make_unique<evals::Evaluator>(name, evals.child(name), options_->seed, auxiliaries_,
                                                             world_size(), rank(), read_data));
    if (evaluators_.back()->use_ema() && !step_->optimizer().has_ema()) {
      throw ConfigError(evaluators_.back()->use_ema_where() + ": evals." + name +
                        ".use_ema: true needs an EMA of the params; set optimizer.ema_decay (e.g. 0.999)");
    }
  }
  if (const std::string& best = options_->checkpointer.best_metric_path; !best.empty()) {
    const config::Node checkpointer = cfg.child("checkpointer");
    check_eval_value(best, checkpointer.child("best_metric_path").where() + ": checkpointer.best_metric_path");
  }
  // Read on every rank (its keys are checked); rank 0 profiles.
  if (const auto profiler = ProfilerOptions::from_config(cfg); profiler && is_chief()) {
    profiler_ = std::make_unique<Profiler>(*profiler, options_->workdir + "/profile", log_);
  }
  const config::Node callbacks = cfg.section("callbacks");
  for (const auto& name : callbacks.keys()) {
    callbacks_.push_back(callback_registry().create(callbacks.child(name)));
    callback_names_.push_back(name);
  }
}

std::pair<std::string, std::string> Trainer::check_eval_value(const std::string& path, const std::string& where) const {
  const auto slash = path.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == path.size()) {
    throw ConfigError(where + " is \"<eval name>/<logged value>\", e.g. test/metrics/accuracy, got \"" + path + "\"");
  }
  const std::string eval = path.substr(0, slash), value = path.substr(slash + 1);
  const std::vector<std::string> names = eval_names();
  const auto it =
      std::find_if(evaluators_.begin(), evaluators_.end(), [&](const auto& e) { return e->name() == eval; });
  if (it == evaluators_.end()) {
    const std::vector<std::string> close = nearest(eval, names, 1);
    throw ConfigError(where + ": the experiment has no eval named \"" + eval + "\"" +
                      (close.empty() ? "" : " (did you mean \"" + close.front() + "\"?)") +
                      (names.empty() ? "; add one under evals" : "; its evals: " + join_names(names)));
  }
  const evals::Evaluator& evaluator = **it;
  if (evaluator.standalone() != evals::Evaluator::Standalone::kNo) {
    throw ConfigError(where + ": eval \"" + eval +
                      "\" runs beside training (kd eval --follow, a standalone run strategy), so training never sees "
                      "its values: give it a run strategy of training (e.g. {type: EveryNSteps, n: 1000}), or read "
                      "another eval");
  }
  if (!evaluator.may_log(value)) {
    const std::vector<std::string> logged = evaluator.logged_names();
    const std::vector<std::string> close = nearest(value, logged, 1);
    throw ConfigError(where + ": eval \"" + eval + "\" logs no \"" + value + "\"" +
                      (close.empty() ? "" : " (did you mean \"" + eval + "/" + close.front() + "\"?)") +
                      "; it logs: " + join_names(logged));
  }
  return {eval, value};
}

int64_t Trainer::cores_for_rank() const {
  return std::max<int64_t>(1, runtime::available_cores() / parallel_->local_world_size());
}

}  // namespace kd::train
