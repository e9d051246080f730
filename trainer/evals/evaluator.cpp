#include "trainer/evals/evaluator.h"
#include <algorithm>

#include <limits>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/step/train_step.h"

namespace kd::evals {

using train::Auxiliaries;
using train::build_auxiliaries;

Evaluator::Evaluator(std::string name, const config::Node& o, int64_t seed,
                     const std::shared_ptr<const train::Auxiliaries>& train_auxiliaries, int64_t num_shards,
                     int64_t shard_index, bool read_data)
    : name_(std::move(name)) {
  if (name_ == "train")
    throw ConfigError(o.where() + ": an eval may not be called \"train\" (that collection is the training one)");
  data::PipelineOptions defaults;
  defaults.shuffle = false;
  defaults.drop_remainder = false;
  defaults.num_epochs = 1;
  defaults.prefetch = 1;
  defaults.num_shards = num_shards;
  defaults.shard_index = shard_index;
  defaults.read_data = read_data;
  pipeline_ = std::make_unique<data::Pipeline>(o.child("ds"), seed, defaults);
  // The members' initial values are the defaults.
  num_batches_ = o.get_int_in("num_batches", num_batches_, 0, std::numeric_limits<int64_t>::max());
  if (auto run = o.find("run"); run && !run->is_null()) read_run(*run);
  use_ema_ = o.get_bool("use_ema", false);
  if (use_ema_) use_ema_where_ = o.child("use_ema").where();
  // Each of the three defaults to the training one unless the eval sets it.
  const Auxiliaries& train = *train_auxiliaries;
  const auto losses = o.find("losses"), metrics = o.find("metrics"), summaries = o.find("summaries");
  if (losses || metrics || summaries) {
    const Auxiliaries own = build_auxiliaries(losses ? o.section("losses") : config::Node(),
                                              metrics ? o.section("metrics") : config::Node(),
                                              summaries ? o.section("summaries") : config::Node());
    auxiliaries_ = std::make_shared<Auxiliaries>(Auxiliaries{.losses = losses ? own.losses : train.losses,
                                                             .metrics = metrics ? own.metrics : train.metrics,
                                                             .summaries = summaries ? own.summaries : train.summaries});
  } else {
    auxiliaries_ = train_auxiliaries;
  }
  o.check_unknown_keys();
}

void Evaluator::read_run(const config::Node& run) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (!run.is_map()) {
    throw ConfigError(run.where() + ": run is a map, e.g. {type: EveryNSteps, n: 1000}, {type: Once, step: 500} or " +
                      "{type: AtEnd}");
  }
  if (!run.has("type")) {  // kd's own spelling
    every_n_steps_ = run.get_int_in("every_n_steps", every_n_steps_, 0, kMax);
    once_at_end_ = run.get_bool("once_at_end", every_n_steps_ == 0);
    run.check_unknown_keys();
    return;
  }
  const std::string type = run.get_string("type");
  if (type == "EveryNSteps") {
    every_n_steps_ = run.get_int_in("n", std::nullopt, 1, kMax);
    skip_first_ = run.get_bool("skip_first", false);
    once_at_end_ = run.get_bool("once_at_end", false);
  } else if (type == "Once") {
    once_at_step_ = run.get_int_in("step", std::nullopt, 0, kMax);
    once_at_end_ = run.get_bool("once_at_end", false);
  } else if (type == "AtEnd" || type == "Final") {  // Final: Kauldron's current name
    once_at_end_ = true;
  } else if (type == "StandaloneEveryCheckpoint" || type == "StandaloneLastCheckpoint") {
    once_at_end_ = false;
    standalone_ = type == "StandaloneEveryCheckpoint" ? Standalone::kEveryCheckpoint : Standalone::kLastCheckpoint;
  } else {
    const std::vector<std::string> close = nearest(
        type, {"EveryNSteps", "Once", "AtEnd", "Final", "StandaloneEveryCheckpoint", "StandaloneLastCheckpoint"}, 1);
    throw ConfigError(run.child("type").where() + ": unknown run strategy \"" + type + "\"" +
                      (close.empty() ? "" : " (did you mean \"" + close.front() + "\"?)") +
                      "; the strategies are EveryNSteps, Once, AtEnd (or Final), StandaloneEveryCheckpoint and "
                      "StandaloneLastCheckpoint");
  }
  run.check_unknown_keys();
}

std::vector<std::string> Evaluator::logged_names() const {
  std::vector<std::string> out;
  for (const auto& [name, loss] : auxiliaries_->losses) out.push_back("losses/" + name);
  if (!auxiliaries_->losses.empty()) out.emplace_back("losses/total");
  for (const auto& [name, metric] : auxiliaries_->metrics) out.push_back("metrics/" + name);
  out.emplace_back("perf_stats/eval_time_sec");
  return out;
}

bool Evaluator::may_log(const std::string& value) const {
  const std::vector<std::string> names = logged_names();
  if (std::find(names.begin(), names.end(), value) != names.end()) return true;
  for (const auto& [name, metric] : auxiliaries_->metrics) {
    if (value.rfind("metrics/" + name + "/", 0) == 0) return true;
  }
  return false;
}

bool Evaluator::should_run(int64_t step, bool last) const {
  if (standalone_ != Standalone::kNo) return false;
  if (last && once_at_end_) return true;
  if (step == once_at_step_) return true;
  return every_n_steps_ > 0 && step % every_n_steps_ == 0 && !(step == 0 && skip_first_);
}

train::AuxiliariesState Evaluator::evaluate(train::TrainStep& step, const train::TrainState& state,
                                            const c10::Device& device) {
  pipeline_->restore({});
  train::AuxiliariesState merged;
  int64_t batches = 0;
  while (num_batches_ == 0 || batches < num_batches_) {
    std::optional<Tree> batch = pipeline_->next();
    if (!batch) break;
    ++batches;
    // A shard's slice of a last batch smaller than the number of shards may be empty.
    if (batch->is_dict() && !batch->empty() && data::num_examples(*batch, name_) == 0) continue;
    merged = merge(merged, step.eval_step(state, data::to_device(*batch, device), auxiliaries_));
  }
  return merged;
}

}  // namespace kd::evals
