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
