#include <torch/cuda.h>
#include <catch2/catch.hpp>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/pipeline.h"
#include "trainer/run/data_parallel_internal.h"
#include "trainer/run/trainer_options.h"

using kd::config::Node;
using kd::train::TrainerOptions;

TEST_CASE("TrainerOptions: the defaults of a minimal experiment are the struct's") {
  const Node cfg = Node::parse("workdir: /tmp/w\nnum_train_steps: 10\n", "e.yaml");
  const TrainerOptions o = TrainerOptions::from_config(cfg);
  const TrainerOptions defaults;
  CHECK(o.workdir == "/tmp/w");
  CHECK(o.num_train_steps == 10);
  CHECK(o.seed == defaults.seed);
  CHECK(o.log_metrics_every == defaults.log_metrics_every);
  CHECK(o.log_summaries_every == o.log_metrics_every);
  CHECK(o.nan_policy == kd::train::kDefaultNanPolicy);
  CHECK(o.nan_policy == kd::train::NanPolicy::kRaise);
  CHECK(o.device.is_cpu());
  CHECK(!o.num_threads);
  CHECK(o.writer.jsonl);
  CHECK(o.writer.csv);
  CHECK(o.writer.tensorboard);
  CHECK(o.checkpointer.save_interval_steps == defaults.checkpointer.save_interval_steps);
  CHECK(o.checkpointer.max_to_keep == defaults.checkpointer.max_to_keep);
  CHECK(o.distributed.timeout == defaults.distributed.timeout);
  CHECK(o.distributed.bucket_bytes == defaults.distributed.bucket_bytes);
  CHECK(!o.init_transform);
}

TEST_CASE("TrainerOptions reads every top-level key it owns and names the key of a bad value") {
  const Node cfg = Node::parse(
      "workdir: w\nseed: 3\nnum_train_steps: 5\nstop_after_steps: 2\nlog_metrics_every: 7\n"
      "log_summaries_every: 9\nnan_policy: skip_step\nallow_config_change: true\nnum_threads: 1\n"
      "writer: {csv: false}\ncheckpointer: {max_to_keep: 2}\ndistributed: {timeout_s: 5}\n",
      "e.yaml");
  const TrainerOptions o = TrainerOptions::from_config(cfg);
  CHECK(o.seed == 3);
  CHECK(o.stop_after_steps == 2);
  CHECK(o.log_metrics_every == 7);
  CHECK(o.log_summaries_every == 9);
  CHECK(o.nan_policy == kd::train::NanPolicy::kSkipStep);
  CHECK(o.allow_config_change);
  CHECK(o.num_threads == 1);
  CHECK(!o.writer.csv);
  CHECK(o.writer.jsonl);
  CHECK(o.checkpointer.max_to_keep == 2);
  CHECK(o.distributed.timeout == std::chrono::milliseconds(5000));

  CHECK_THROWS_WITH(TrainerOptions::from_config(Node::parse("workdir: w\nnum_train_steps: 0\n", "e.yaml")),
                    Catch::Contains("e.yaml:2:") && Catch::Contains("num_train_steps must be > 0"));
  CHECK_THROWS_WITH(TrainerOptions::from_config(Node::parse("workdir: w\nlog_metrics_every: 0\n", "e.yaml")),
                    Catch::Contains("log_metrics_every must be > 0"));
  CHECK_THROWS_WITH(TrainerOptions::from_config(Node::parse("workdir: w\ndevice: tpu\n", "e.yaml")),
                    Catch::Contains("e.yaml:2:") && Catch::Contains("device must be"));
  CHECK_THROWS_WITH(TrainerOptions::from_config(Node::parse("workdir: w\nnum_threads: 0\n", "e.yaml")),
                    Catch::Contains("num_threads must be auto or in [1, "));
  CHECK_THROWS_WITH(TrainerOptions::from_config(Node::parse("workdir: w\nwriter: {jsnl: true}\n", "e.yaml")),
                    Catch::Contains("unknown key \"jsnl\""));
  CHECK_THROWS_AS(TrainerOptions::from_config(Node::parse("seed: 1\n", "e.yaml")), kd::ConfigError);
}

TEST_CASE("device: cuda without a GPU says which is missing, CUDA in LibTorch or the GPU itself") {
  const auto parse = [] { return TrainerOptions::from_config(Node::parse("workdir: w\ndevice: cuda:0\n", "e.yaml")); };
#ifndef KD_WITH_CUDA  // Debian's LibTorch
  CHECK_THROWS_WITH(parse(), Catch::Contains("e.yaml:2:") && Catch::Contains("a LibTorch without CUDA") &&
                                 Catch::Contains("use device: cpu"));
#else
  if (torch::cuda::device_count() > 0) {  // a GPU machine
    CHECK(parse().device == c10::Device(c10::kCUDA, 0));
  } else {  // PyPI's LibTorch on a machine without a GPU
    CHECK_THROWS_WITH(parse(), Catch::Contains("e.yaml:2:") && Catch::Contains("has CUDA but sees no GPU") &&
                                   Catch::Contains("use device: cpu"));
  }
#endif
}

TEST_CASE("keys that may change on resume: logging, evals, devices; not the model or the data") {
  for (const char* key : {"num_train_steps", "evals.test.num_batches", "checkpointer.max_to_keep", "device",
                          "optimizer.accumulate_steps", "distributed.timeout_s", "train_ds.prefetch"}) {
    CHECK(kd::train::may_change_on_resume(key));
  }
  for (const char* key : {"seed", "model.hidden_sizes", "train_ds.batch_size", "optimizer.learning_rate", "evalsx"}) {
    CHECK_FALSE(kd::train::may_change_on_resume(key));
  }
}

TEST_CASE("alone, data parallelism is the identity") {
  const auto alone = kd::train::DataParallel::from_environment();  // ctest sets no torchrun variables
  CHECK(alone->rank() == 0);
  CHECK(alone->world_size() == 1);
  CHECK(alone->is_chief());
  CHECK(alone->rank0_value(42, "a test") == 42);
  CHECK(alone->stop_requested(true));
  CHECK_FALSE(alone->stop_requested(false));
  kd::train::AuxiliariesState s;
  s.loss_states = kd::Tree::dict({{"xent", kd::Tree(int64_t{1})}});
  CHECK(alone->merge(s, nullptr, "a test").loss_states.is_same(s.loss_states));
  CHECK(alone->gather_random_states(c10::Device(c10::kCPU), "a test").is_none());
  CHECK(alone->rank_device(c10::Device(c10::kCPU), "e.yaml:1:1").is_cpu());
}

TEST_CASE("a batch goes to the CPU as it is") {
  const kd::Tree batch = kd::Tree::dict({{"x", torch::ones({2})}});
  CHECK(kd::data::to_device(batch, c10::Device(c10::kCPU)).is_same(batch));
}

TEST_CASE("stop_after_time reads HH:MM:SS, D-HH:MM:SS, M:SS and seconds, and names the key of anything else") {
  using kd::train::parse_duration;
  CHECK(parse_duration("23:30:00", "w") == 23 * 3600 + 30 * 60);
  CHECK(parse_duration("100:00:01", "w") == 100 * 3600 + 1);
  CHECK(parse_duration("1-12:00:00", "w") == 36 * 3600);
  CHECK(parse_duration("1:30", "w") == 90);
  CHECK(parse_duration("90", "w") == 90);
  CHECK(parse_duration("0.5", "w") == 0.5);
  for (const char* bad : {"", "abc", "1:60:00", "1:00:60", "1-30", "1:2:3:4", "-5", "1.5:00", "1..2", ".", "::"}) {
    INFO(bad);
    CHECK_THROWS_WITH(parse_duration(bad, "e.yaml:3:18: stop_after_time"),
                      Catch::Contains("e.yaml:3:18: stop_after_time") && Catch::Contains("HH:MM:SS"));
  }
  const Node cfg = Node::parse("workdir: w\nnum_train_steps: 5\nstop_after_time: '02:00:00'\n", "e.yaml");
  CHECK(TrainerOptions::from_config(cfg).stop_after_seconds == 7200);
  CHECK(TrainerOptions::from_config(Node::parse("workdir: w\nnum_train_steps: 5\n", "e.yaml")).stop_after_seconds == 0);
  CHECK_THROWS_WITH(
      TrainerOptions::from_config(Node::parse("workdir: w\nnum_train_steps: 5\nstop_after_time: 2h\n", "e.yaml")),
      Catch::Contains("e.yaml:3:18") && Catch::Contains("\"2h\" is not a duration"));
}
