#include "trainer/evals/evaluator.h"

#include <limits>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/step/train_step.h"

namespace kd::evals {

Evaluator::Evaluator(std::string name, const config::Node& o, int64_t seed,
                     const std::shared_ptr<const train::Auxiliaries>& train_auxiliaries, int64_t num_shards,
                     int64_t shard_index)
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
  pipeline_ = std::make_unique<data::Pipeline>(o.child("ds"), seed, defaults);
  // The members' initial values are the defaults.
  num_batches_ = o.get_int_in("num_batches", num_batches_, 0, std::numeric_limits<int64_t>::max());
  if (auto run = o.find("run"); run && !run->is_null()) {
    every_n_steps_ = run->get_int_in("every_n_steps", every_n_steps_, 0, std::numeric_limits<int64_t>::max());
    once_at_end_ = run->get_bool("once_at_end", every_n_steps_ == 0);
    run->check_unknown_keys();
  }
  const auto losses = o.find("losses"), metrics = o.find("metrics"), summaries = o.find("summaries");
  if (losses || metrics || summaries) {
    auxiliaries_ = std::make_shared<train::Auxiliaries>(
        train::build_auxiliaries(o.section("losses"), o.section("metrics"), o.section("summaries")));
  } else {
    auxiliaries_ = train_auxiliaries;
  }
  o.check_unknown_keys();
}

bool Evaluator::should_run(int64_t step, bool last) const {
  if (last && once_at_end_) return true;
  return every_n_steps_ > 0 && step % every_n_steps_ == 0;
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
