// kd::evals::Evaluator: evaluates the model on a dataset in eval mode (dropout off, BatchNorm
// running statistics), merging metric states exactly over every batch.
//
//   evals:
//     test:
//       ds: {type: FashionMnist, split: test, batch_size: 1000}   # shuffle off, all examples
//       num_batches: 0          # 0: one full pass
//       run: {type: EveryNSteps, n: 1000, skip_first: true, once_at_end: true}
//       use_ema: false          # true: evaluate the EMA of the params (optimizer.ema_decay)
//       metrics: {accuracy: {type: Accuracy}}
//
// losses, metrics and summaries each default to the training ones: an eval that sets only
// `metrics` still computes the training losses and summaries (`losses: {}` turns them off).
//
// When it runs (`run`, Kauldron's run strategies; steps count the updates done, 0 is before the
// first):
//   {type: EveryNSteps, n: N, skip_first: false}  at steps 0, N, 2N, ... (skip_first: not at 0)
//   {type: Once, step: S}                          at step S only
//   {type: AtEnd} or {type: Final} (Kauldron)      after the last step (the default)
//   once_at_end: true (any type)                   also after the last step
//   {every_n_steps: N, once_at_end: B}            at N, 2N, ... (never at 0), and at the end
//                                                  if B (default: when every_n_steps is 0)
//   {type: StandaloneEveryCheckpoint}              never in training: `kd eval --follow`
//                                                  evaluates each new checkpoint beside it
//   {type: StandaloneLastCheckpoint}               never in training: `kd eval --follow`
//                                                  evaluates the run's final checkpoint
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
  // Kauldron's standalone strategies: evaluations by a process of their own (kd eval --follow).
  enum class Standalone { kNo, kEveryCheckpoint, kLastCheckpoint };

  // With `num_shards` > 1 (data-parallel training) this process evaluates shard `shard_index`
  // of every batch; the caller merges the states of all shards.
  // `read_data` false: the options are read and checked, no data (kd config); such an
  // evaluator cannot run.
  Evaluator(std::string name, const config::Node& options, int64_t seed,
            const std::shared_ptr<const train::Auxiliaries>& train_auxiliaries, int64_t num_shards = 1,
            int64_t shard_index = 0, bool read_data = true);

  const std::string& name() const { return name_; }
  // The losses, metrics and summaries it computes (its own, or the training ones).
  const std::shared_ptr<const train::Auxiliaries>& auxiliaries() const { return auxiliaries_; }
  // Whether to run after training step `step` (the number of steps done; 0 before the first);
  // `last` after the run's last step.
  bool should_run(int64_t step, bool last) const;
  // Whether it runs beside training rather than in it (then should_run is always false).
  Standalone standalone() const { return standalone_; }
  // The warnings of its data source (data::Pipeline::warnings).
  const std::vector<std::string>& data_warnings() const { return pipeline_->warnings(); }
  // The values each evaluation logs, known before it runs: losses/<name> and losses/total (with
  // losses), metrics/<name>, perf_stats/eval_time_sec. A metric whose value is a tree logs
  // metrics/<name>/<leaf> instead, known only once computed.
  std::vector<std::string> logged_names() const;
  // Whether `value` ("metrics/accuracy") is one of logged_names, or a leaf of a metric's tree.
  bool may_log(const std::string& value) const;
  // Whether it evaluates the EMA of the params rather than the params (`use_ema`).
  bool use_ema() const { return use_ema_; }
  // The examples its data's on_error: skip left out since the last call ("<name>: <why>").
  std::vector<std::string> take_skipped() { return pipeline_->take_skipped(); }
  // Where `use_ema` was set, for errors.
  const std::string& use_ema_where() const { return use_ema_where_; }

  // One evaluation: the merged state over the dataset (or num_batches of it), or over this
  // shard's slices of it.
  train::AuxiliariesState evaluate(train::TrainStep& step, const train::TrainState& state, const c10::Device& device);

 private:
  void read_run(const config::Node& run);

  std::string name_;
  std::unique_ptr<data::Pipeline> pipeline_;
  std::shared_ptr<const train::Auxiliaries> auxiliaries_;
  int64_t num_batches_ = 0;    // num_batches: 0 is the whole set
  int64_t every_n_steps_ = 0;  // EveryNSteps.n / every_n_steps: 0 is never
  bool skip_first_ = true;     // not at step 0 (EveryNSteps.skip_first; always for every_n_steps)
  int64_t once_at_step_ = -1;  // Once.step: -1 is none
  bool once_at_end_ = true;    // once_at_end
  Standalone standalone_ = Standalone::kNo;
  bool use_ema_ = false;
  std::string use_ema_where_;
};

}  // namespace kd::evals
