// kd::data::Pipeline: batches of a source, shuffled per epoch, transformed, made ahead by
// worker threads. Deterministic and resumable: batch (epoch e, index i) depends only on the
// seed, e and i (never on the number of workers, ranks or batches in flight), so saving
// `state()` and calling `restore()` continues the exact stream an uninterrupted run would have
// seen.
//
// The order of an epoch is index_shuffle's permutation (index_shuffle.h: per position, O(1)
// memory). An in-memory source is gathered and transformed a batch at a time; a random-access
// source (source.h) is read an example at a time, each example transformed as on its own (a
// batch of one, with a random stream of its own position) and the examples then stacked; the
// transforms that give the same result for the stack at once (Transform::applies_each) run on
// it when the examples' shapes agree.
//
//   train_ds:
//     type: FashionMnist        # the source (see source.h) and its options
//     split: train
//     batch_size: 128
//     shuffle: true             # a new order every epoch, from the experiment's seed
//     num_epochs: 0             # 0: endless
//     drop_remainder: true      # false: the last batch of an epoch may be smaller
//     num_workers: auto         # threads making batches ahead, each a whole batch with one
//                               # thread for its tensor operations (auto: 1 for
//                               # in-memory sources; for random-access ones the cores the
//                               # intra-op threads leave, at least 1)
//     prefetch: auto            # batches made ahead (0: none, on the training thread). auto: for
//                               # training on the CPU, none when the intra-op threads use every
//                               # core, else the Trainer times the first steps' batches against
//                               # the steps and uses 2 if they are dear; 2 on accelerators; evals 1.
//                               # At least num_workers are in flight when prefetching.
//     on_error: raise          # an example a random-access source cannot read stops the run
//                               # (raise), or is left out of its batch (skip): each named in a
//                               # warning, counted in perf_stats/skipped_examples
//     transforms: [...]
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <c10/core/Device.h>

#include "trainer/config/node.h"
#include "trainer/data/source.h"
#include "trainer/data/transforms.h"
#include "trainer/tree/tree.h"

namespace kd::data {

struct PipelineOptions {
  int64_t batch_size = 32;
  bool shuffle = true;
  int64_t num_epochs = 0;  // 0: endless
  bool drop_remainder = true;
  int64_t prefetch = 2;
  int64_t num_workers = 0;       // 0: auto (see above)
  bool skip_unreadable = false;  // on_error: skip
  int64_t seed = 0;
  // Data-parallel training: this process reads only its slice of every batch, examples
  // [i*n/N, (i+1)*n/N) of a batch of n for shard i of N, so N shards together read exactly the
  // batches of one process. Batch positions (and so state()) are the same in every shard.
  int64_t num_shards = 1;
  int64_t shard_index = 0;
  // Every example once, in the source's order, whatever the YAML says (kd predict): no shuffle,
  // one epoch, the last batch kept.
  bool in_order = false;
  // false: the options, source and transforms are read (their defaults taken), no data is
  // (kd config); such a pipeline gives no batches.
  bool read_data = true;
};

// The position of the next batch to deliver.
struct PipelineState {
  int64_t epoch = 0;
  int64_t index = 0;
  friend bool operator==(const PipelineState&, const PipelineState&) = default;
};

class Pipeline {
 public:
  // From the experiment: `options` holds the source's and the pipeline's keys.
  // `defaults` gives the pipeline options the YAML does not set (e.g. shuffle off for evals).
  // `defaults.num_shards` / `shard_index` shard it (they are not YAML keys).
  Pipeline(const config::Node& options, int64_t seed, PipelineOptions defaults = {});
  Pipeline(SourcePtr source, std::vector<TransformPtr> transforms, PipelineOptions options);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // The next batch, or nullopt after the last epoch. Rethrows errors of the worker.
  std::optional<Tree> next();

  PipelineState state() const { return position_; }
  // Continue from `state` (as returned by state()); drops prefetched batches. A position outside
  // the data is a kd::CorruptionError.
  void restore(const PipelineState& state);

  // Prepares up to `prefetch` batches ahead on the worker threads from now on (0: on the caller's
  // thread, in next()); the stream of batches is the same either way.
  void set_prefetch(int64_t prefetch);
  // The worker threads that make batches when prefetching.
  int64_t num_workers() const { return workers_count_; }

  int64_t num_examples() const { return num_examples_; }
  int64_t batches_per_epoch() const;
  const PipelineOptions& options() const { return options_; }
  const std::string& description() const { return description_; }
  // The source's warnings about its data (Source::warnings), for the run's log.
  const std::vector<std::string>& warnings() const { return warnings_; }
  // Seconds next() spent waiting for the worker since construction.
  double wait_seconds() const { return wait_seconds_; }
  // With on_error: skip, the examples left out of the batches next() returned since the last
  // call, each as "<its name>: <why>".
  std::vector<std::string> take_skipped();

  // The batch (this shard's slice of it) at a position, computed directly (what the worker does).
  Tree batch_at(const PipelineState& at) const;

 private:
  void init();
  bool valid(const PipelineState& at) const;
  PipelineState advance(PipelineState at) const;
  void start_workers();
  void stop_workers();
  void work();
  // transforms_[i] run by `run` on `batch`, its errors naming the transform and `what`.
  Tree run_transform(std::size_t i, const Tree& batch, const std::function<Tree()>& run,
                     const std::function<std::string()>& what) const;
  // A batch's transforms, drawing from a generator seeded by `seed`.
  Tree transformed(Tree batch, uint64_t seed, const std::function<std::string()>& what) const;
  // A random-access source's examples (each with a first dimension of 1) transformed each as
  // alone with a generator seeded by seeds[k], and stacked; `name(k)` names example k.
  Tree transformed_examples(std::vector<Tree> examples, const std::vector<uint64_t>& seeds,
                            const std::function<std::string(std::size_t)>& name) const;
  // The batch at a position, and the examples on_error: skip left out of it.
  struct Batch {
    Tree tree;
    std::vector<std::string> skipped;
  };
  Batch make_batch(const PipelineState& at) const;

  SourcePtr source_;
  std::vector<TransformPtr> transforms_;
  std::vector<std::string> transform_types_;  // for errors: "transforms[1] (OneHot)"
  PipelineOptions options_;
  std::string description_;
  std::vector<std::string> warnings_;
  Tree examples_;
  int64_t num_examples_ = 0;
  PipelineState position_;

  // Prefetching: workers claim positions in order (sequence numbers from next_claim_) and
  // leave each batch, or the error making it raised, under its sequence number; next() takes
  // them in order. At most max(prefetch, workers) batches are claimed and not yet taken.
  struct Made {
    std::optional<Batch> batch;  // nullopt: past the last epoch
    std::exception_ptr error;
  };
  std::vector<std::string> skipped_;  // taken by take_skipped()
  int64_t workers_count_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<int64_t, Made> made_;
  int64_t next_claim_ = 0, next_take_ = 0;
  PipelineState claim_at_;
  bool end_claimed_ = false;
  bool stop_ = false;
  double wait_seconds_ = 0;
};

// Whether `ds` (a pipeline's YAML) leaves prefetching to its owner: `prefetch` absent, null or
// `auto`.
bool prefetch_is_auto(const config::Node& ds);

// The one way a batch reaches the training device: every tensor copied with non_blocking (it
// overlaps the step on a GPU); the batch itself on the CPU, where the pipeline makes it.
Tree to_device(const Tree& batch, const c10::Device& device);

}  // namespace kd::data
