#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "tests/step/test_helpers.h"
#include "trainer/evals/evaluator.h"
#include "trainer/step/train_step.h"

using kd::Tree;
using kd::testing::make_model;
using kd::testing::yaml;

TEST_CASE("an eval over a dataset not a multiple of the batch size gives the exact accuracy") {
  torch::manual_seed(0);
  auto model = make_model("{type: MLP, input_size: 8, hidden_sizes: [16], output_size: 3, dropout: 0.5}");
  auto aux = std::make_shared<kd::train::Auxiliaries>();
  aux->losses.emplace_back("xent", kd::losses::registry().create(yaml("{type: SoftmaxCrossEntropyWithIntLabels}")));
  aux->metrics.emplace_back("accuracy", kd::metrics::registry().create(yaml("{type: Accuracy}")));
  kd::train::TrainStep step(model, yaml("{type: adam, learning_rate: 0.01}"), aux);
  auto state = step.init();
  for (int i = 0; i < 20; ++i) state = step.step(state, kd::testing::blobs(32, i)).first;

  const char* ds = "{type: Synthetic, num_examples: 103, num_features: 8, num_classes: 3, seed: 4, batch_size: 10}";
  kd::evals::Evaluator evaluator("test", yaml(std::string("{ds: ") + ds + "}"), 0, aux);
  const auto result = evaluator.evaluate(step, state, c10::Device(c10::kCPU));
  double accuracy = -1;
  for (const auto& [name, v] : compute_scalars(result)) {
    if (name == "metrics/accuracy") accuracy = v;
  }
  // Direct: every example at once, in eval mode (dropout off).
  const Tree all = kd::data::source_registry()
                       .create(yaml("{type: Synthetic, num_examples: 103, num_features: 8, num_classes: 3, seed: 4}"))
                       ->load();
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = model->forward(Tree::dict({{"x", all.get("image")}})).get("logits").tensor();
  const double expected = (logits.argmax(1) == all.get("label").tensor()).sum().item<double>() / 103.0;
  CHECK(accuracy == Approx(expected).epsilon(1e-12));
  CHECK(result.metric_states.get("accuracy.count").to_int() == 103);
  // Evaluating again gives the same (the pipeline restarts).
  double again = -1;
  for (const auto& [name, v] : compute_scalars(evaluator.evaluate(step, state, c10::Device(c10::kCPU)))) {
    if (name == "metrics/accuracy") again = v;
  }
  CHECK(again == accuracy);
  // num_batches limits the pass.
  kd::evals::Evaluator two("test", yaml(std::string("{num_batches: 2, ds: ") + ds + "}"), 0, aux);
  CHECK(two.evaluate(step, state, c10::Device(c10::kCPU)).metric_states.get("accuracy.count").to_int() == 20);
}

namespace {

std::shared_ptr<const kd::train::Auxiliaries> training_auxiliaries() {
  return std::make_shared<kd::train::Auxiliaries>(kd::train::build_auxiliaries(
      yaml("{xent: {type: SoftmaxCrossEntropyWithIntLabels}}"), yaml("{accuracy: {type: Accuracy}}"),
      yaml("{hist: {type: Histogram, tensor: preds.logits}}")));
}

kd::evals::Evaluator eval_with(const std::string& keys) {
  return kd::evals::Evaluator(
      "test",
      yaml("{ds: {type: Synthetic, num_examples: 10, num_features: 8, num_classes: 3, batch_size: 5}, " + keys + "}"),
      0, training_auxiliaries());
}

std::vector<int64_t> steps_run(const kd::evals::Evaluator& e, int64_t last_step) {
  std::vector<int64_t> out;
  for (int64_t s = 0; s <= last_step; ++s) {
    if (e.should_run(s, s == last_step)) out.push_back(s);
  }
  return out;
}

template <typename T>
std::vector<std::string> names(const kd::train::Named<T>& named) {
  std::vector<std::string> out;
  for (const auto& [name, item] : named) out.push_back(name);
  return out;
}

}  // namespace

TEST_CASE("an eval that sets one of losses, metrics, summaries keeps the training ones for the others") {
  const auto train = training_auxiliaries();
  const auto only_metrics = eval_with("metrics: {top: {type: Accuracy}}");
  CHECK(names(only_metrics.auxiliaries()->metrics) == std::vector<std::string>{"top"});
  CHECK(names(only_metrics.auxiliaries()->losses) == std::vector<std::string>{"xent"});
  CHECK(names(only_metrics.auxiliaries()->summaries) == std::vector<std::string>{"hist"});
  const auto no_losses = eval_with("losses: {}");  // an empty map turns them off
  CHECK(no_losses.auxiliaries()->losses.empty());
  CHECK(names(no_losses.auxiliaries()->metrics) == std::vector<std::string>{"accuracy"});
  CHECK(names(eval_with("").auxiliaries()->summaries) == std::vector<std::string>{"hist"});
}

TEST_CASE("eval run strategies: EveryNSteps with skip_first, Once, AtEnd and kd's every_n_steps") {
  using V = std::vector<int64_t>;
  CHECK(steps_run(eval_with("run: {type: EveryNSteps, n: 4}"), 10) == V{0, 4, 8});
  CHECK(steps_run(eval_with("run: {type: EveryNSteps, n: 4, skip_first: true}"), 10) == V{4, 8});
  CHECK(steps_run(eval_with("run: {type: EveryNSteps, n: 4, once_at_end: true}"), 10) == V{0, 4, 8, 10});
  CHECK(steps_run(eval_with("run: {type: Once, step: 3}"), 10) == V{3});
  CHECK(steps_run(eval_with("run: {type: Once, step: 0}"), 10) == V{0});
  CHECK(steps_run(eval_with("run: {type: AtEnd}"), 10) == V{10});
  CHECK(steps_run(eval_with("run: {type: Final}"), 10) == V{10});  // Kauldron's name
  CHECK(steps_run(eval_with(""), 10) == V{10});                    // the default: at the end
  CHECK(steps_run(eval_with("run: {every_n_steps: 4}"), 10) == V{4, 8});
  CHECK(steps_run(eval_with("run: {every_n_steps: 4, once_at_end: true}"), 10) == V{4, 8, 10});
  CHECK_THROWS_WITH(eval_with("run: {type: EveryNStep, n: 4}"),
                    Catch::Contains("unknown run strategy \"EveryNStep\"") && Catch::Contains("EveryNSteps"));
  CHECK_THROWS_WITH(eval_with("run: {type: EveryNSteps}"), Catch::Contains("missing required key \"run.n\""));
  CHECK_THROWS_WITH(eval_with("run: {type: EveryNSteps, n: 0}"), Catch::Contains("run.n"));
  CHECK_THROWS_WITH(eval_with("run: {type: Once, step: 3, n: 2}"),
                    Catch::Contains("unknown key") && Catch::Contains("n"));
  CHECK_THROWS_WITH(eval_with("run: 5"), Catch::Contains("run is a map"));
  // The standalone strategies never run in training: kd eval --follow runs them.
  using Standalone = kd::evals::Evaluator::Standalone;
  const auto every = eval_with("run: {type: StandaloneEveryCheckpoint}");
  CHECK(steps_run(every, 10).empty());
  CHECK(every.standalone() == Standalone::kEveryCheckpoint);
  CHECK(eval_with("run: {type: StandaloneLastCheckpoint}").standalone() == Standalone::kLastCheckpoint);
  CHECK(eval_with("run: {type: AtEnd}").standalone() == Standalone::kNo);
  CHECK_THROWS_WITH(eval_with("run: {type: StandaloneEveryCheckpoint, once_at_end: true}"),
                    Catch::Contains("unknown key") && Catch::Contains("once_at_end"));
  CHECK_THROWS_WITH(eval_with("run: {type: StandaloneLastCheckpont}"),
                    Catch::Contains("did you mean \"StandaloneLastCheckpoint\"?"));
}
