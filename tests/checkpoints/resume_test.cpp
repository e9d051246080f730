#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include <torch/torch.h>

#include "tests/temp_dir.h"
#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"
#include "trainer/config/experiment.h"
#include "trainer/run/trainer.h"
#include "trainer/writers/writer.h"

namespace fs = std::filesystem;

namespace {

using kd::testing::fresh_dir;

// A small experiment with everything that must survive a restart: shuffled data, dropout,
// Adam, an EMA, and a checkpoint interval that does not divide the logging interval.
const char* kResumeExperiment = R"(
seed: 3
num_train_steps: 40
log_metrics_every: 8
num_threads: 1
train_ds: {type: Synthetic, num_examples: 200, num_features: 8, num_classes: 3, batch_size: 16,
           transforms: [{type: RandomFlip, key: image, axis: height}]}
model: {type: MLP, input_size: 8, hidden_sizes: [16], output_size: 3, dropout: 0.3}
train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels}}
train_metrics: {accuracy: {type: Accuracy}}
optimizer: {type: adam, learning_rate: 0.01, ema_decay: 0.9}
checkpointer: {save_interval_steps: 5, max_to_keep: 2}
)";

kd::config::Node resume_experiment(const fs::path& dir, const std::vector<kd::config::Override>& overrides = {}) {
  fs::create_directories(dir);
  std::ofstream(dir / "exp.yaml") << kResumeExperiment;
  std::vector<kd::config::Override> all = {{"workdir", (dir / "wd").string()}};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return kd::config::load_experiment((dir / "exp.yaml").string(), all);
}

std::vector<std::pair<std::string, torch::Tensor>> final_params(const fs::path& dir, int64_t step) {
  return kd::checkpoints::read_checkpoint_tensors(
      (dir / "wd" / "checkpoints" / ("ckpt_" + std::to_string(step))).string(), "params");
}

// The metric records without timings.
std::vector<std::string> records(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& r : kd::writers::read_jsonl((dir / "wd" / "metrics.jsonl").string())) {
    std::string line = std::to_string(r.step) + " " + r.collection;
    for (const auto& [k, v] : r.values) {
      if (k.rfind("perf_stats/", 0) != 0) line += " " + k + "=" + std::to_string(v);
    }
    out.push_back(line);
  }
  return out;
}

}  // namespace

TEST_CASE("a run stopped and resumed ends with bit-identical params and identical metrics") {
  const std::string precision = GENERATE("fp32", "bf16");
  INFO("precision " << precision);
  const fs::path straight = fresh_dir(), resumed = fresh_dir();
  kd::train::Trainer(resume_experiment(straight, {{"precision", precision}})).train();
  {
    kd::train::Trainer first(resume_experiment(resumed, {{"stop_after_steps", "17"}, {"precision", precision}}));
    first.train();
    CHECK(first.step() == 17);
  }
  // As if killed between step 15's checkpoint and step 17's: the resumed run starts at 15 and
  // must log step 16 again, once.
  fs::remove_all(resumed / "wd" / "checkpoints" / "ckpt_17");
  kd::train::Trainer second(resume_experiment(resumed, {{"precision", precision}}));
  second.train();
  CHECK(second.step() == 40);
  const auto a = final_params(straight, 40), b = final_params(resumed, 40);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(a[i].second.equal(b[i].second));
  }
  CHECK(records(straight) == records(resumed));
  CHECK(records(straight).size() == 5);  // steps 8, 16, 24, 32, 40
  fs::remove_all(straight);
  fs::remove_all(resumed);
}

TEST_CASE("resuming with a changed experiment is refused with the differences, unless allowed") {
  const fs::path dir = fresh_dir();
  kd::train::Trainer(resume_experiment(dir, {{"stop_after_steps", "10"}})).train();
  CHECK_THROWS_WITH(kd::train::Trainer(resume_experiment(dir, {{"optimizer.learning_rate", "0.02"}})).train(),
                    Catch::Contains("optimizer.learning_rate: 0.01 -> 0.02") && Catch::Contains("allow_config_change"));
  kd::train::Trainer allowed(
      resume_experiment(dir, {{"optimizer.learning_rate", "0.02"}, {"allow_config_change", "true"}}));
  allowed.train();
  CHECK(allowed.step() == 40);
  fs::remove_all(dir);
}

TEST_CASE("a workdir whose checkpoints are all damaged is not touched") {
  const fs::path dir = fresh_dir();
  kd::train::Trainer(resume_experiment(dir, {{"stop_after_steps", "5"}})).train();
  const fs::path ckpt = dir / "wd" / "checkpoints" / "ckpt_5";
  fs::resize_file(ckpt / "state.safetensors", 100);
  CHECK_THROWS_WITH(kd::train::Trainer(resume_experiment(dir)).train(), Catch::Contains("none is valid"));
  CHECK(fs::file_size(ckpt / "state.safetensors") == 100);
  fs::remove_all(dir);
}

TEST_CASE("init_transform loads params from another run, renamed, and reports mismatches") {
  const fs::path source = fresh_dir(), target = fresh_dir();
  kd::train::Trainer(resume_experiment(source, {{"stop_after_steps", "5"}})).train();
  const auto saved = final_params(source, 5);
  // Same model: a strict load of every param.
  {
    kd::train::Trainer t(
        resume_experiment(target, {{"init_transform", "{checkpoint: " + (source / "wd").string() + "}"},
                                   {"stop_after_steps", "1"},
                                   {"optimizer.learning_rate", "0.0"}}));
    t.train();
    const auto loaded = final_params(target, 1);
    CHECK(loaded[0].second.equal(saved[0].second));  // lr 0: still the loaded values
  }
  fs::remove_all(target);
  // A wider hidden layer: strict mode lists the shape mismatches and loads nothing.
  CHECK_THROWS_WITH(kd::train::Trainer(
                        resume_experiment(target, {{"init_transform", "{checkpoint: " + (source / "wd").string() + "}"},
                                                   {"model.hidden_sizes", "[32]"}}))
                        .train(),
                    Catch::Contains("shape mismatch (3)") && Catch::Contains("params.layers.0.weight"));
  fs::remove_all(target);
  // A deeper model: its last layer is loaded from the source's last layer under another name.
  kd::train::Trainer renamed(
      resume_experiment(target, {{"init_transform", "{checkpoint: " + (source / "wd").string() +
                                                        ", select: [params.layers.6.**], "
                                                        "rename: {params.layers.6.**: params.layers.3.**}}"},
                                 {"model.hidden_sizes", "[16, 16]"},
                                 {"stop_after_steps", "1"},
                                 {"optimizer.learning_rate", "0.0"}}));
  renamed.train();
  const auto loaded = final_params(target, 1);
  REQUIRE(loaded.size() == 6);
  CHECK(loaded[4].first == "layers.6.weight");
  CHECK(loaded[4].second.equal(saved[2].second));  // from the source's layers.3.weight
  CHECK(loaded[5].second.equal(saved[3].second));
  fs::remove_all(target);
  // A selection that chooses nothing is a mistake, not a silent no-op.
  CHECK_THROWS_WITH(
      kd::train::Trainer(
          resume_experiment(target, {{"init_transform", "{checkpoint: " + (source / "wd").string() +
                                                            ", select: [params.encoder.**], strict: false}"}}))
          .train(),
      Catch::Contains("init_transform.select chooses none of the model's tensors"));
  fs::remove_all(source);
  fs::remove_all(target);
}

TEST_CASE("the EMA of the params is evaluated (use_ema), checkpointed and loaded by init_transform") {
  const fs::path source = fresh_dir(), target = fresh_dir();
  const std::string eval_ds =
      "{type: Synthetic, num_examples: 60, num_features: 8, num_classes: 3, seed: 9, "
      "batch_size: 20}";
  kd::train::Trainer(
      resume_experiment(source, {{"num_train_steps", "3"},
                                 {"checkpointer", "{save_interval_steps: 1, max_to_keep: 5}"},
                                 {"evals", "{ema: {ds: " + eval_ds + ", use_ema: true, run: {type: Once, step: 2}}}"}}))
      .train();
  auto group = [&](int64_t step, const char* name) {
    return kd::checkpoints::read_checkpoint_tensors(
        (source / "wd" / "checkpoints" / ("ckpt_" + std::to_string(step))).string(), name);
  };
  // ema_3 = 0.9 ema_2 + 0.1 params_3 (ema_decay 0.9), computed here in double; the eval at step 2
  // swapped the EMA in and must have put the params back, or step 3 would have updated the EMA.
  const auto ema2 = group(2, "ema"), ema3 = group(3, "ema"), params3 = group(3, "params");
  REQUIRE(ema3.size() == params3.size());
  for (std::size_t i = 0; i < ema3.size(); ++i) {
    INFO(ema3[i].first);
    CHECK(ema3[i].first == params3[i].first);
    const torch::Tensor expected = 0.9 * ema2[i].second.to(torch::kDouble) + 0.1 * params3[i].second.to(torch::kDouble);
    // Two float roundings of values below 1: well within 1e-6.
    CHECK((ema3[i].second.to(torch::kDouble) - expected).abs().max().item<double>() <= 1e-6);
    CHECK(!ema3[i].second.equal(params3[i].second));
  }
  // A run started from the EMA of step 2 (lr 0: the params stay) evaluates at step 0 what the
  // use_ema eval of step 2 evaluated.
  kd::train::Trainer(
      resume_experiment(target,
                        {{"init_transform", "{checkpoint: " + (source / "wd").string() + ", step: 2, use_ema: true}"},
                         {"num_train_steps", "1"},
                         {"optimizer.learning_rate", "0.0"},
                         {"optimizer.ema_decay", "0.0"},
                         {"evals", "{ema: {ds: " + eval_ds + ", run: {type: EveryNSteps, n: 100}}}"}}))
      .train();
  const auto loaded = final_params(target, 1);
  for (std::size_t i = 0; i < loaded.size(); ++i) CHECK(loaded[i].second.equal(ema2[i].second));
  auto eval_values = [](const fs::path& dir, int64_t step) {
    std::map<std::string, double> out;
    for (const auto& r : kd::writers::read_jsonl((dir / "wd" / "metrics.jsonl").string())) {
      if (r.collection == "ema" && r.step == step) out.insert(r.values.begin(), r.values.end());
    }
    return out;
  };
  const auto a = eval_values(source, 2), b = eval_values(target, 0);
  REQUIRE(a.count("losses/xent") == 1);
  REQUIRE(b.count("losses/xent") == 1);
  CHECK(a.at("losses/xent") == b.at("losses/xent"));
  CHECK(a.at("metrics/accuracy") == b.at("metrics/accuracy"));
  // Without an EMA: use_ema and init_transform's use_ema say what to set.
  CHECK_THROWS_WITH(
      kd::train::Trainer(resume_experiment(
          fresh_dir(), {{"optimizer.ema_decay", "0.0"}, {"evals", "{e: {ds: " + eval_ds + ", use_ema: true}}"}})),
      Catch::Contains("evals.e.use_ema") && Catch::Contains("optimizer.ema_decay"));
  CHECK_THROWS_WITH(
      kd::train::Trainer(resume_experiment(fresh_dir(), {{"init_transform", "{checkpoint: " + (target / "wd").string() +
                                                                                ", use_ema: true}"}}))
          .train(),
      Catch::Contains("use_ema") && Catch::Contains("holds no EMA"));
  fs::remove_all(source);
  fs::remove_all(target);
}
