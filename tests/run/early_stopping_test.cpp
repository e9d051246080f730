#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/config/experiment.h"
#include "trainer/run/early_stopping.h"
#include "trainer/run/trainer.h"
#include "trainer/writers/writer.h"

namespace fs = std::filesystem;

namespace {

using kd::testing::fresh_dir;

// Learning rate 0: the eval's loss is the same at every eval, so it never improves after the
// first, and EarlyStopping's decisions are known in advance.
const char* kEarlyStoppingExperiment = R"(
seed: 1
num_train_steps: 40
log_metrics_every: 2
num_threads: 1
train_ds: {type: Synthetic, num_examples: 64, num_features: 8, num_classes: 3, batch_size: 16}
model: {type: MLP, input_size: 8, hidden_sizes: [16], output_size: 3}
train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels}}
train_metrics: {accuracy: {type: Accuracy}}
optimizer: {type: sgd, learning_rate: 0.0}
checkpointer: {save_interval_steps: 100}
evals:
  test:
    ds: {type: Synthetic, num_examples: 30, num_features: 8, num_classes: 3, seed: 2, batch_size: 10}
    run: {type: EveryNSteps, n: 2, once_at_end: true}
  final:
    ds: {type: Synthetic, num_examples: 30, num_features: 8, num_classes: 3, seed: 3, batch_size: 10}
    run: {type: AtEnd}
callbacks:
  early: {type: EarlyStopping, metric: test/losses/xent, mode: min, patience: 3}
)";

kd::config::Node experiment(const fs::path& dir, const std::vector<kd::config::Override>& overrides = {}) {
  fs::create_directories(dir);
  std::ofstream(dir / "exp.yaml") << kEarlyStoppingExperiment;
  std::vector<kd::config::Override> all = {{"workdir", (dir / "wd").string()}};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return kd::config::load_experiment((dir / "exp.yaml").string(), all);
}

// "<step> <collection>" of every record of metrics.jsonl.
std::vector<std::string> records(const fs::path& dir, const std::string& collection) {
  std::vector<std::string> out;
  for (const auto& r : kd::writers::read_jsonl((dir / "wd" / "metrics.jsonl").string())) {
    if (r.collection == collection) out.push_back(std::to_string(r.step));
  }
  return out;
}

std::vector<int64_t> checkpoint_steps(const fs::path& dir) {
  std::vector<int64_t> out;
  for (const auto& e : fs::directory_iterator(dir / "wd" / "checkpoints")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("ckpt_", 0) == 0) out.push_back(std::stoll(name.substr(5)));
  }
  std::sort(out.begin(), out.end());
  return out;
}

using Strings = std::vector<std::string>;

}  // namespace

TEST_CASE("EarlyStopping stops after `patience` evals without improvement, with a checkpoint and the end's evals") {
  const fs::path dir = fresh_dir();
  {
    kd::train::Trainer trainer(experiment(dir));
    trainer.train();
    // Evals at 0 (the best), 2, 4, 6: three without improvement.
    CHECK(trainer.step() == 6);
    CHECK_THAT(trainer.stop_reason(), Catch::Contains("EarlyStopping: test/losses/xent did not improve in 3 evals") &&
                                          Catch::Contains("at step 0"));
  }
  CHECK(records(dir, "test") == Strings{"0", "2", "4", "6"});  // once at 6, although once_at_end
  CHECK(records(dir, "final") == Strings{"6"});
  CHECK(checkpoint_steps(dir) == std::vector<int64_t>{6});
  // Started again, it stays stopped: no step, no eval, no checkpoint.
  {
    kd::train::Trainer again(experiment(dir));
    again.train();
    CHECK(again.step() == 6);
    CHECK_THAT(again.stop_reason(), Catch::Contains("EarlyStopping stopped this run"));
  }
  CHECK(records(dir, "test") == Strings{"0", "2", "4", "6"});
  CHECK(records(dir, "final") == Strings{"6"});
  CHECK(checkpoint_steps(dir) == std::vector<int64_t>{6});
  fs::remove_all(dir);
}

TEST_CASE("EarlyStopping stays stopped when its eval falls on a checkpoint step") {
  // A checkpoint at every eval step: the checkpoint of step 6 is written before the eval that
  // stops the run, and must hold the stop.
  for (const char* interval : {"2", "6"}) {
    INFO("save_interval_steps " << interval);
    const fs::path dir = fresh_dir();
    {
      kd::train::Trainer trainer(experiment(dir, {{"checkpointer.save_interval_steps", interval}}));
      trainer.train();
      CHECK(trainer.step() == 6);
    }
    for (int again = 0; again < 2; ++again) {
      kd::train::Trainer rerun(experiment(dir, {{"checkpointer.save_interval_steps", interval}}));
      rerun.train();
      CHECK(rerun.step() == 6);
      CHECK_THAT(rerun.stop_reason(), Catch::Contains("EarlyStopping stopped this run"));
    }
    CHECK(records(dir, "test") == Strings{"0", "2", "4", "6"});
    CHECK(checkpoint_steps(dir).back() == 6);
    fs::remove_all(dir);
  }
}

TEST_CASE("EarlyStopping's count survives a resumption") {
  const fs::path dir = fresh_dir();
  kd::train::Trainer(experiment(dir, {{"stop_after_steps", "3"}})).train();  // evals at 0 and 2
  kd::train::Trainer resumed(experiment(dir));
  resumed.train();
  CHECK(resumed.step() == 6);  // as the uninterrupted run
  CHECK(records(dir, "test") == Strings{"0", "2", "4", "6"});
  fs::remove_all(dir);
}

TEST_CASE("EarlyStopping names a metric that no eval logs, with the fix") {
  const fs::path dir = fresh_dir();
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(dir, {{"callbacks.early.metric", "tset/losses/xent"}})).train(),
                    Catch::Contains("callbacks.early.metric") && Catch::Contains("no eval named \"tset\"") &&
                        Catch::Contains("did you mean \"test\""));
  fs::remove_all(dir);
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(dir, {{"callbacks.early.metric", "test/losses/xnet"}})).train(),
                    Catch::Contains("logs no \"losses/xnet\"") && Catch::Contains("test/losses/xent"));
  fs::remove_all(dir);
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(dir, {{"callbacks.early.metric", "accuracy"}})),
                    Catch::Contains("<eval name>/<logged value>"));
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(dir, {{"callbacks.early.mode", "lowest"}})),
                    Catch::Contains("mode is max or min"));
  fs::remove_all(dir);
}

TEST_CASE("a metric no eval will log is refused before the first step, and a mode is inferred only for losses") {
  const fs::path dir = fresh_dir();
  const auto refused_before_training = [&](const std::vector<kd::config::Override>& overrides, const char* what) {
    INFO(what);
    CHECK_THROWS_AS(kd::train::Trainer(experiment(dir, overrides)).train(), kd::ConfigError);
    CHECK(!fs::exists(dir / "wd" / "metrics.jsonl"));  // no step was taken
    fs::remove_all(dir);
  };
  refused_before_training({{"callbacks.early.metric", "test/metrics/acuracy"}}, "a misspelt metric");
  refused_before_training({{"evals.test.run", "{type: StandaloneEveryCheckpoint}"}}, "a standalone eval");
  CHECK_THROWS_WITH(
      kd::train::Trainer(experiment(dir, {{"evals.test.run", "{type: StandaloneEveryCheckpoint}"}})).train(),
      Catch::Contains("runs beside training (kd eval --follow") && Catch::Contains("EveryNSteps"));
  fs::remove_all(dir);
  // The checkpointer's best_metric_path, when the Trainer is built.
  CHECK_THROWS_WITH(
      kd::train::Trainer(experiment(
          dir, {{"checkpointer.best_metric_path", "test/metrics/acuracy"}, {"checkpointer.best_mode", "max"}})),
      Catch::Contains("checkpointer.best_metric_path") && Catch::Contains("logs no \"metrics/acuracy\"") &&
          Catch::Contains("did you mean \"test/metrics/accuracy\""));
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(dir, {{"checkpointer.best_metric_path", "tset/losses/xent"}})),
                    Catch::Contains("no eval named \"tset\""));
  // A metric's direction is asked for; a loss's is min.
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(dir, {{"checkpointer.best_metric_path", "test/metrics/accuracy"}})),
                    Catch::Contains("checkpointer.best_mode is needed") && Catch::Contains("max if larger is better"));
  CHECK_NOTHROW(kd::train::Trainer(experiment(dir, {{"checkpointer.best_metric_path", "test/losses/xent"}})));
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(
                        dir, {{"callbacks.early", "!replace {type: EarlyStopping, metric: test/metrics/accuracy}"}})),
                    Catch::Contains("callbacks.early.mode is needed"));
  CHECK_NOTHROW(
      kd::train::Trainer(experiment(dir, {{"callbacks.early", "{type: EarlyStopping, metric: test/losses/xent}"}})));
  fs::remove_all(dir);
}

TEST_CASE("EarlyStopping: an improvement is by more than min_delta, in the mode's direction") {
  auto make = [](const std::string& mode, double min_delta) {
    kd::train::EarlyStopping e(kd::config::Node::parse("{metric: test/metrics/accuracy, mode: " + mode +
                                                       ", min_delta: " + std::to_string(min_delta) + "}"));
    e.restore(kd::Tree::dict({{"has_best", kd::Tree(int64_t{1})},
                              {"best", kd::Tree(0.5)},
                              {"best_step", kd::Tree(int64_t{10})},
                              {"evals_without_improvement", kd::Tree(int64_t{0})},
                              {"stopped", kd::Tree(int64_t{0})}}));
    return e;
  };
  CHECK(make("max", 0.1).improves(0.61));
  CHECK(!make("max", 0.1).improves(0.59));
  CHECK(!make("max", 0.0).improves(0.5));
  CHECK(make("max", 0.0).improves(0.5000001));
  CHECK(make("min", 0.1).improves(0.39));
  CHECK(!make("min", 0.1).improves(0.41));
  CHECK(!make("min", 0.0).improves(0.6));
}

TEST_CASE("stop_after_time stops after the step that reaches it, with a checkpoint and no final evals; resuming ends") {
  const fs::path dir = fresh_dir();
  {
    kd::train::Trainer trainer(experiment(dir, {{"stop_after_time", "0.000001"}, {"callbacks", "{}"}}));
    trainer.train();
    CHECK(trainer.step() == 1);
    CHECK_THAT(trainer.stop_reason(), Catch::Contains("stop_after_time"));
  }
  CHECK(checkpoint_steps(dir) == std::vector<int64_t>{1});
  CHECK(records(dir, "final").empty());
  kd::train::Trainer resumed(experiment(dir, {{"num_train_steps", "4"}, {"callbacks", "{}"}}));
  resumed.train();
  CHECK(resumed.step() == 4);
  CHECK(records(dir, "final") == Strings{"4"});
  fs::remove_all(dir);
}
