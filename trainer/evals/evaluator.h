// kd::evals::Evaluator: evaluates the model on a dataset in eval mode (dropout off, BatchNorm
// running statistics), merging metric states exactly over every batch.
//
//   evals:
//     test:
//       ds: {type: FashionMnist, split: test, batch_size: 1000}   # shuffle off, all examples
//       num_batches: 0          # 0: one full pass
//       run: {every_n_steps: 1000, once_at_end: true}
//       metrics: {accuracy: {type: Accuracy}}   # default: the training losses/metrics/summaries
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <c10/core/Device.h>

#include "trainer/config/node.h"
#include "trainer/data/pipeline.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/writers/writer.h"

namespace kd::train {
class TrainStep;
struct TrainState;
}  // namespace kd::train

namespace kd::evals {

class Evaluator {
 public:
  // With `num_shards` > 1 (data-parallel training) this process evaluates shard `shard_index`
  // of every batch; the caller merges the states of all shards.
  Evaluator(std::string name, const config::Node& options, int64_t seed,
            const std::shared_ptr<const train::Auxiliaries>& train_auxiliaries, int64_t num_shards = 1,
            int64_t shard_index = 0);

  const std::string& name() const { return name_; }
  // The losses, metrics and summaries it computes (its own, or the training ones).
  const std::shared_ptr<const train::Auxiliaries>& auxiliaries() const { return auxiliaries_; }
  // Whether to run after training step `step` (the number of steps done); `last` at the end.
  bool should_run(int64_t step, bool last) const;

  // One evaluation: the merged state over the dataset (or num_batches of it), or over this
  // shard's slices of it.
  train::AuxiliariesState evaluate(train::TrainStep& step, const train::TrainState& state, const c10::Device& device);

 private:
  std::string name_;
  std::unique_ptr<data::Pipeline> pipeline_;
  std::shared_ptr<const train::Auxiliaries> auxiliaries_;
  int64_t num_batches_ = 0;    // num_batches: 0 is the whole set
  int64_t every_n_steps_ = 0;  // run.every_n_steps: 0 is never
  bool once_at_end_ = true;    // run.once_at_end: default true unless every_n_steps is set
};

}  // namespace kd::evals
