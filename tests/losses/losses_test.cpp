#include <torch/torch.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "tests/step/test_helpers.h"
#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/context/context.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/states.h"

using kd::Tree;
using kd::train::Context;

namespace {

kd::losses::LossPtr make_loss(const std::string& yaml) {
  return kd::losses::registry().create(kd::config::Node::parse(yaml));
}

double loss_value(const std::string& yaml, const Context& ctx) { return make_loss(yaml)->value(ctx).item<double>(); }

using kd::testing::f64;

// preds.x = [1, 2, 3], batch.y = [0, 2, 5]: errors 1, 0, -2.
Context regression_ctx() {
  return Context{.step = 0,
                 .batch = Tree::dict({{"y", f64({0, 2, 5})}, {"mask", f64({1, 0, 1})}}),
                 .preds = Tree::dict({{"x", f64({1, 2, 3})}})};
}

std::string config_error(const std::string& yaml) {
  try {
    make_loss(yaml);
  } catch (const kd::ConfigError& e) {
    return e.what();
  }
  FAIL("no ConfigError for " << yaml);
  return {};
}

}  // namespace

TEST_CASE("L2 is the mean squared error without a one-half factor", "[losses]") {
  CHECK(loss_value("type: L2\npreds: preds.x\ntargets: batch.y", regression_ctx()) == Approx(5.0 / 3.0));
}

TEST_CASE("L1 is the mean absolute error", "[losses]") {
  CHECK(loss_value("type: L1\npreds: preds.x\ntargets: batch.y", regression_ctx()) == Approx(1.0));
}

TEST_CASE("Huber is quadratic within delta and linear beyond it", "[losses]") {
  const Context ctx{.batch = Tree::dict({{"y", f64({0, 0, 0})}}), .preds = Tree::dict({{"x", f64({0.5, 2, -3})}})};
  // delta 1: 0.5 * 0.25, 1 * (2 - 0.5), 1 * (3 - 0.5).
  CHECK(loss_value("type: Huber\npreds: preds.x\ntargets: batch.y", ctx) == Approx((0.125 + 1.5 + 2.5) / 3));
  // delta 2: 0.5 * 0.25, 0.5 * 4, 2 * (3 - 1).
  CHECK(loss_value("type: Huber\npreds: preds.x\ntargets: batch.y\ndelta: 2", ctx) == Approx((0.125 + 2.0 + 4.0) / 3));
}

TEST_CASE("Value averages the tensor as is and AbsoluteValue its absolute value", "[losses]") {
  const Context ctx{.preds = Tree::dict({{"loss", f64({-1, 2})}})};
  CHECK(loss_value("type: Value\nvalues: preds.loss", ctx) == Approx(0.5));
  CHECK(loss_value("type: AbsoluteValue\nvalues: preds.loss", ctx) == Approx(1.5));
}

TEST_CASE("NegativeCosineSimilarity is minus the cosine along the last axis", "[losses]") {
  const Context ctx{.batch = Tree::dict({{"y", torch::tensor({0.0, 1.0, 2.0, 2.0}, torch::kDouble).reshape({2, 2})}}),
                    .preds = Tree::dict({{"x", torch::tensor({1.0, 0.0, 1.0, 1.0}, torch::kDouble).reshape({2, 2})}})};
  const auto loss = make_loss("type: NegativeCosineSimilarity\npreds: preds.x\ntargets: batch.y");
  const torch::Tensor values = loss->values(ctx);
  REQUIRE(values.sizes() == torch::IntArrayRef{2});
  CHECK(values[0].item<double>() == Approx(0.0).margin(1e-12));
  CHECK(values[1].item<double>() == Approx(-1.0));
  CHECK(loss->value(ctx).item<double>() == Approx(-0.5));
}

TEST_CASE("SoftmaxCrossEntropy reads preds.logits and batch.label by default", "[losses]") {
  const Context ctx{
      .batch = Tree::dict({{"label", torch::tensor({1.0, 0.0, 0.5, 0.5}, torch::kDouble).reshape({2, 2})}}),
      .preds = Tree::dict({{"logits", torch::tensor({0.0, 0.0, std::log(3.0), 0.0}, torch::kDouble).reshape({2, 2})}})};
  // Example 0: -log(1/2). Example 1: probabilities 3/4, 1/4 against labels 1/2, 1/2.
  const double expected = (std::log(2.0) - 0.5 * std::log(0.75) - 0.5 * std::log(0.25)) / 2;
  CHECK(loss_value("type: SoftmaxCrossEntropy", ctx) == Approx(expected));
}

TEST_CASE("SoftmaxCrossEntropyWithIntLabels gives one value per example for labels [B] or [B, 1]", "[losses]") {
  const torch::Tensor logits = torch::tensor({0.0, 0.0, 0.0, std::log(2.0), 0.0, 0.0}, torch::kDouble).reshape({2, 3});
  const auto loss = make_loss("type: SoftmaxCrossEntropyWithIntLabels");
  for (const torch::Tensor& labels : {torch::tensor({0, 1}), torch::tensor({0, 1}).reshape({2, 1})}) {
    const Context ctx{.batch = Tree::dict({{"label", labels}}), .preds = Tree::dict({{"logits", logits}})};
    const torch::Tensor values = loss->values(ctx);
    REQUIRE(values.sizes() == torch::IntArrayRef{2});
    CHECK(values[0].item<double>() == Approx(std::log(3.0)));
    CHECK(values[1].item<double>() == Approx(std::log(4.0)));  // p = 1 / (2 + 1 + 1)
    CHECK(loss->value(ctx).item<double>() == Approx((std::log(3.0) + std::log(4.0)) / 2));
  }
}

TEST_CASE("integer labels outside [0, C) are an error naming the value, unless they equal ignore_index", "[losses]") {
  torch::manual_seed(5);
  const torch::Tensor logits = torch::randn({5, 4}, torch::kDouble);
  const torch::Tensor labels = torch::tensor({2, -100, 0, 3, -100});
  const Context ctx{.batch = Tree::dict({{"label", labels}}), .preds = Tree::dict({{"logits", logits}})};
  // PyTorch's cross_entropy would skip the two -100 silently; kd says so and how to ask for it.
  CHECK_THROWS_WITH(
      make_loss("type: SoftmaxCrossEntropyWithIntLabels")->value(ctx),
      Catch::Contains("-100 (element 1, and 1 more), outside [0, 4)") && Catch::Contains("ignore_index: -100"));
  const Context too_big{.batch = Tree::dict({{"label", torch::tensor({0, 4, 1, 1, 1})}}),
                        .preds = Tree::dict({{"logits", logits}})};
  CHECK_THROWS_WITH(make_loss("type: SoftmaxCrossEntropyWithIntLabels")->value(too_big),
                    Catch::Contains("class index 4 (element 1), outside [0, 4)"));
  CHECK_THROWS_WITH(make_loss("type: SoftmaxCrossEntropyWithIntLabels\nignore_index: -1")->value(ctx),
                    Catch::Contains("not ignore_index -1"));
  // With ignore_index: the mean over the three other examples, as PyTorch's cross_entropy gives.
  const auto loss = make_loss("type: SoftmaxCrossEntropyWithIntLabels\nignore_index: -100");
  const auto value = loss->evaluate(ctx);
  const double reference = torch::nn::functional::cross_entropy(logits, labels).item<double>();
  CHECK(value.loss.item<double>() == Approx(reference).epsilon(1e-12));
  CHECK(value.count.tensor().item<double>() == 3);
  // With a mask too: both leave examples out.
  Context masked = ctx;
  masked.batch = masked.batch.set("mask", f64({1, 1, 0, 1, 1}));
  const double kept =
      torch::nn::functional::cross_entropy(logits.index({torch::tensor({0, 3})}), torch::tensor({2, 3})).item<double>();
  CHECK(make_loss("type: SoftmaxCrossEntropyWithIntLabels\nignore_index: -100\nmask: batch.mask")
            ->value(masked)
            .item<double>() == Approx(kept).epsilon(1e-12));
}

TEST_CASE("SigmoidBinaryCrossEntropy is the element-wise logistic loss", "[losses]") {
  const Context ctx{.batch = Tree::dict({{"label", f64({1, 1, 0})}}),
                    .preds = Tree::dict({{"logits", f64({0, std::log(3.0), std::log(3.0)})}})};
  // sigmoid(log 3) = 3/4.
  const double expected = (std::log(2.0) - std::log(0.75) - std::log(0.25)) / 3;
  CHECK(loss_value("type: SigmoidBinaryCrossEntropy", ctx) == Approx(expected));
}

TEST_CASE("a mask averages over the kept elements by default and over all values on request", "[losses]") {
  // L1 values 1, 0, 2 with mask 1, 0, 1.
  CHECK(loss_value("type: L1\npreds: preds.x\ntargets: batch.y\nmask: batch.mask", regression_ctx()) == Approx(1.5));
  CHECK(loss_value("type: L1\npreds: preds.x\ntargets: batch.y\nmask: batch.mask\nnormalize_by: values",
                   regression_ctx()) == Approx(1.0));
}

TEST_CASE("a constant weight scales the loss", "[losses]") {
  CHECK(loss_value("type: L1\npreds: preds.x\ntargets: batch.y\nweight: 0.25", regression_ctx()) == Approx(0.25));
}

TEST_CASE("a schedule weight is evaluated at the context's step", "[losses]") {
  Context ctx = regression_ctx();
  ctx.step = 5;
  const std::string yaml =
      "type: L1\npreds: preds.x\ntargets: batch.y\n"
      "weight: {type: Linear, init_value: 0, end_value: 1, transition_steps: 10}";
  CHECK(loss_value(yaml, ctx) == Approx(0.5));
  ctx.step = 0;
  CHECK(loss_value(yaml, ctx) == Approx(0.0).margin(1e-12));
}

TEST_CASE("the loss state weights the weighted loss by the number of values it averages", "[losses]") {
  const auto loss = make_loss("type: L1\npreds: preds.x\ntargets: batch.y\nweight: 2");
  const Tree state = loss->get_state(loss->evaluate(regression_ctx()));
  // |errors| 1, 0, 2: mean 1, weighted 2, over 3 values.
  CHECK(kd::metrics::AverageState::total(state).item<double>() == Approx(6.0));
  CHECK(state.get("count").to_double() == 3.0);
  CHECK(kd::metrics::AverageState::compute(state).item<double>() == Approx(2.0));
}

TEST_CASE("merged loss states are the average over all examples, not the mean of batch means", "[losses]") {
  // Batches of 3 and 1 examples: errors 1, 0, -2 and then 4. Over the 4 examples the mean
  // absolute error is 7/4; the mean of the two batch means would be (1 + 4) / 2.
  const auto loss = make_loss("type: L1\npreds: preds.x\ntargets: batch.y");
  const Context last{.batch = Tree::dict({{"y", f64({0})}}), .preds = Tree::dict({{"x", f64({4})}})};
  const Tree merged =
      loss->merge(loss->get_state(loss->evaluate(regression_ctx())), loss->get_state(loss->evaluate(last)));
  CHECK(kd::metrics::AverageState::compute(merged).item<double>() == Approx(7.0 / 4.0));

  // With a mask, the masked-in elements count: errors 1, -2 (mask 1, 0, 1) and then 4 (mask 1).
  const auto masked = make_loss("type: L1\npreds: preds.x\ntargets: batch.y\nmask: batch.mask");
  Context last_masked = last;
  last_masked.batch.insert("mask", f64({1}));
  const Tree m = masked->merge(masked->get_state(masked->evaluate(regression_ctx())),
                               masked->get_state(masked->evaluate(last_masked)));
  CHECK(kd::metrics::AverageState::compute(m).item<double>() == Approx(7.0 / 3.0));
  CHECK(m.get("count").to_double() == 3.0);
}

TEST_CASE("a per-example mask may be [B] or [B, 1], as Kauldron's", "[losses]") {
  Context ctx = regression_ctx();
  const std::string yaml = "type: L1\npreds: preds.x\ntargets: batch.y\nmask: batch.mask";
  const double flat = loss_value(yaml, ctx);
  CHECK(flat == Approx(1.5));  // (1 + 2) / 2
  ctx.batch.insert("mask", f64({1, 0, 1}).unsqueeze(-1));
  CHECK(loss_value(yaml, ctx) == Approx(flat));
  // Values [B, 2] with a per-example mask [B, 1] or [B].
  ctx.preds = Tree::dict({{"x", torch::stack({f64({1, 2, 3}), f64({1, 2, 3})}, 1)}});
  ctx.batch.insert("y", torch::stack({f64({0, 2, 5}), f64({0, 2, 5})}, 1));
  CHECK(loss_value(yaml, ctx) == Approx(1.5));
  ctx.batch.insert("mask", f64({1, 0, 1}));
  CHECK(loss_value(yaml, ctx) == Approx(1.5));
  // A mask that fits neither is a TypeError naming the mask, not a raw LibTorch error.
  ctx.batch.insert("mask", f64({1, 0}));
  try {
    loss_value(yaml, ctx);
    FAIL("no error for a mask of the wrong length");
  } catch (const kd::TypeError& e) {
    CHECK_THAT(e.what(), Catch::Contains("batch.mask") && Catch::Contains("[B] or [B, 1]"));
  }
}

TEST_CASE("a loss without a required key is a ConfigError naming the key", "[losses]") {
  const std::string message = config_error("type: L2\npreds: preds.x");
  CHECK_THAT(message, Catch::Contains("\"targets\""));
  CHECK_THAT(config_error("type: Value"), Catch::Contains("\"values\""));
}

TEST_CASE("an unknown loss option is a ConfigError with the nearest option", "[losses]") {
  const std::string message = config_error("type: Huber\npreds: preds.x\ntargets: batch.y\ndelt: 2");
  CHECK_THAT(message, Catch::Contains("delt"));
  CHECK_THAT(message, Catch::Contains("Did you mean"));
  CHECK_THAT(message, Catch::Contains("delta"));
}

TEST_CASE("the loss registry lists the nine built-in losses", "[losses]") {
  const auto& names = kd::losses::registry().names();
  CHECK(names.size() == 9);
  for (const char* name : {"L1", "L2", "Huber", "AbsoluteValue", "Value", "NegativeCosineSimilarity",
                           "SoftmaxCrossEntropy", "SoftmaxCrossEntropyWithIntLabels", "SigmoidBinaryCrossEntropy"}) {
    CHECK(kd::losses::registry().contains(name));
    CHECK_FALSE(kd::losses::registry().doc(name).empty());
  }
}
