#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "tests/step/test_helpers.h"
#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/context/context.h"
#include "trainer/metrics/metric.h"

using kd::Tree;
using kd::train::Context;

namespace {

using kd::testing::make_metric;

using kd::testing::f64;

// grads: encoder.weight has norm 5, encoder.bias norm 1, head norm 3.
Context grads_ctx() {
  return Context{.grads = Tree::dict(
                     {{"encoder", Tree::dict({{"weight", f64({3, 4})}, {"bias", f64({1})}})}, {"head", f64({0, 3})}})};
}

}  // namespace

TEST_CASE("TreeMap of Norm over a grads tree gives one norm per leaf", "[wrappers]") {
  const auto metric = make_metric("type: TreeMap\nmetric: {type: Norm, tensor: grads}");
  const Tree value = metric->compute(metric->get_state(grads_ctx()));
  CHECK(value.get("encoder.weight").tensor().item<double>() == Approx(5.0));
  CHECK(value.get("encoder.bias").tensor().item<double>() == Approx(1.0));
  CHECK(value.get("head").tensor().item<double>() == Approx(3.0));
  CHECK(value.flatten().size() == 3);
}

TEST_CASE("TreeMap merges each leaf's state with the inner metric", "[wrappers]") {
  const auto metric = make_metric("type: TreeMap\nmetric: {type: Norm, tensor: grads.encoder}");
  const Context zero{.grads = Tree::dict({{"encoder", Tree::dict({{"weight", f64({0, 0})}, {"bias", f64({3})}})}})};
  const Tree merged = metric->merge(metric->get_state(grads_ctx()), metric->get_state(zero));
  const Tree value = metric->compute(merged);
  CHECK(value.get("weight").tensor().item<double>() == Approx(2.5));  // (5 + 0) / 2
  CHECK(value.get("bias").tensor().item<double>() == Approx(2.0));    // (1 + 3) / 2
  CHECK(metric->compute(metric->merge(Tree(), merged)).get("weight").tensor().item<double>() == Approx(2.5));
}

TEST_CASE("TreeMap lists the inner metric's keys", "[wrappers]") {
  const auto metric = make_metric("type: TreeMap\nmetric: {type: Norm, tensor: grads}");
  REQUIRE(metric->keys().size() == 1);
  CHECK(metric->keys()[0].first == "tensor");
  CHECK(metric->keys()[0].second.str() == "grads");
}

TEST_CASE("TreeReduce merges the per-leaf states into one value", "[wrappers]") {
  const auto metric = make_metric("type: TreeReduce\nmetric: {type: Norm, tensor: grads}");
  // The mean of the per-leaf norms 5, 1 and 3.
  CHECK(metric->compute(metric->get_state(grads_ctx())).tensor().item<double>() == Approx(3.0));
}

TEST_CASE("SkipIfMissing gives a none state when a key is missing and the inner state otherwise", "[wrappers]") {
  const auto metric = make_metric("type: SkipIfMissing\nmetric: {type: Accuracy}");
  const Context without{.batch = Tree::dict({{"image", f64({0})}}), .preds = Tree::dict({{"logits", f64({1, 0})}})};
  const Tree skipped = metric->get_state(without);
  CHECK(skipped.is_none());
  CHECK(metric->compute(skipped).is_none());

  const Context with{.batch = Tree::dict({{"label", torch::tensor({0, 0})}}),
                     .preds = Tree::dict({{"logits", f64({1, 0, 0, 1}).reshape({2, 2})}})};
  const Tree state = metric->get_state(with);
  CHECK(metric->compute(state).tensor().item<double>() == Approx(0.5));
  CHECK(metric->compute(metric->merge(skipped, state)).tensor().item<double>() == Approx(0.5));
  CHECK(metric->keys().size() == 2);
}

TEST_CASE("a wrapper without a metric is a ConfigError", "[wrappers]") {
  CHECK_THROWS_AS(make_metric("type: TreeMap"), kd::ConfigError);
  CHECK_THROWS_AS(make_metric("type: TreeMap\nmetric: {type: Norm, tensr: grads}"), kd::ConfigError);
}
