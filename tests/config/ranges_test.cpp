// Every number an experiment gives is checked where it is read: a value outside its range is a
// ConfigError that names the key (and file:line), never a silent default, a wrap-around or a
// crash later. One row per key that has a range; the acceptance of a value at each end of it is
// covered by the components' own tests.
#include <catch2/catch.hpp>

#include <functional>
#include <string>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/source.h"
#include "trainer/data/transforms.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/optim/schedules.h"
#include "trainer/run/trainer_options.h"
#include "trainer/summaries/summary.h"

using kd::config::Node;

namespace {

struct Case {
  std::string yaml;
  std::string expected;  // in the message
};

void refuses(const std::function<void(const Node&)>& build, const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    INFO(c.yaml);
    const Node n = Node::parse(c.yaml, "bad.yaml");
    CHECK_THROWS_AS(build(n), kd::ConfigError);
    CHECK_THROWS_WITH(build(n), Catch::Contains(c.expected) && Catch::Contains("bad.yaml:"));
  }
}

}  // namespace

TEST_CASE("top-level counts and seeds out of range are refused with the key") {
  refuses([](const Node& n) { kd::train::TrainerOptions::from_config(n); },
          {{"workdir: w\nnum_train_steps: 0\n", "num_train_steps"},
           {"workdir: w\nnum_train_steps: -5\n", "num_train_steps"},
           {"workdir: w\nnum_train_steps: 10\nstop_after_steps: -1\n", "stop_after_steps"},
           {"workdir: w\nnum_train_steps: 10\nseed: -1\n", "seed"},
           {"workdir: w\nnum_train_steps: 10\nlog_metrics_every: 0\n", "log_metrics_every"},
           {"workdir: w\nnum_train_steps: 10\nlog_summaries_every: -3\n", "log_summaries_every"},
           {"workdir: w\nnum_train_steps: 10\nnum_threads: 0\n", "num_threads"},
           {"workdir: w\nnum_train_steps: 10\ncheckpointer: {max_to_keep: 0}\n", "max_to_keep"},
           {"workdir: w\nnum_train_steps: 10\ncheckpointer: {save_interval_steps: -1}\n", "save_interval_steps"},
           {"workdir: w\nnum_train_steps: 10\ndistributed: {timeout_s: -1}\n", "timeout_s"},
           {"workdir: w\nnum_train_steps: 1e3\n", "num_train_steps"}});
}

TEST_CASE("no key takes an infinity or a NaN") {
  refuses([](const Node& n) { kd::optim::make_schedule(n.child("lr")); },
          {{"lr: .nan\n", "\"lr\" must be a finite number"},
           {"lr: .inf\n", "\"lr\" must be a finite number"},
           {"lr: {type: Linear, init_value: -.inf, end_value: 0, transition_steps: 10}\n", "init_value"}});
}

TEST_CASE("schedules refuse negative steps and rates that make no schedule") {
  refuses([](const Node& n) { kd::optim::make_schedule(n.child("lr")); },
          {{"lr: {type: Linear, init_value: 1, end_value: 0, transition_steps: 10, transition_begin: -1}\n",
            "transition_begin"},
           {"lr: {type: ExponentialDecay, init_value: 1, transition_steps: 10, decay_rate: -0.5}\n", "decay_rate"},
           {"lr: {type: ExponentialDecay, init_value: 1, transition_steps: 10, decay_rate: 0}\n", "decay_rate"},
           {"lr: {type: PiecewiseConstant, init_value: 1, boundaries: [-10], scales: [0.1]}\n", "boundaries"},
           {"lr: {type: CosineDecay, init_value: 1, decay_steps: 0}\n", "decay_steps"},
           {"lr: {type: WarmupCosineDecay, peak_value: 1, warmup_steps: -1, decay_steps: 10}\n", "warmup_steps"}});
}

TEST_CASE("data sources and transforms refuse counts, sizes and probabilities out of range") {
  refuses([](const Node& n) { kd::data::source_registry().create(n); },
          {{"{type: FashionMnist, num_examples: -1}", "num_examples"},
           {"{type: Synthetic, num_examples: 0}", "num_examples"},
           {"{type: Synthetic, num_features: -2}", "num_features"},
           {"{type: Synthetic, num_classes: 0}", "num_classes"},
           {"{type: Synthetic, seed: -4}", "seed"},
           {"{type: Csv, path: x.csv, split: train, split_seed: -1}", "split_seed"},
           {"{type: Csv, path: x.csv, label_column: 0, num_classes: 0}", "num_classes"},
           {"{type: Csv, path: x.csv, label_column: 0, label_dtype: int8}", "label_dtype"},
           {"{type: Csv, path: x.csv, num_classes: 3}", "set label_column too"},
           {"{type: ImageFolder, path: d, split: train, split_seed: -1}", "split_seed"}});
  refuses([](const Node& n) { kd::data::transform_registry().create(n); },
          {{"{type: OneHot, num_classes: 0}", "num_classes"},
           {"{type: RandomFlip, probability: 1.5}", "probability"},
           {"{type: RandomFlip, probability: -0.1}", "probability"},
           {"{type: RandomCrop, size: [0, 4]}", "size"},
           {"{type: RandomCrop, size: [4, 4], padding: -1}", "padding"},
           {"{type: Reshape, shape: [-2, 4]}", "shape"},
           {"{type: Reshape, shape: [-1, -1]}", "at most one -1"},
           {"{type: Reshape, shape: [0, 4]}", "shape"},
           {"{type: Rearrange, pattern: 'h (w c) -> h w c', axes_lengths: {c: 0}}", "c"}});
}

TEST_CASE("losses, metrics and summaries refuse parameters out of range") {
  refuses([](const Node& n) { kd::losses::registry().create(n); },
          {{"{type: Huber, preds: preds.y, targets: batch.y, delta: 0}", "delta"},
           {"{type: SoftmaxCrossEntropyWithIntLabels, ignore_index: 1.5}", "ignore_index"}});
  refuses([](const Node& n) { kd::metrics::registry().create(n); },
          {{"{type: Psnr, pred: preds.x, target: batch.y, dynamic_range: 0}", "dynamic_range"},
           {"{type: Ssim, pred: preds.x, target: batch.y, filter_size: 0}", "filter_size"},
           {"{type: Ssim, pred: preds.x, target: batch.y, k1: 0}", "k1"},
           {"{type: Ssim, pred: preds.x, target: batch.y, k2: -1}", "k2"}});
  refuses([](const Node& n) { kd::summaries::registry().create(n); },
          {{"{type: Histogram, tensor: preds.x, num_buckets: 0}", "num_buckets"},
           {"{type: ShowTexts, texts: batch.t, num_texts: 0}", "num_texts"}});
}
