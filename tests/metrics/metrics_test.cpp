#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "tests/step/test_helpers.h"
#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/context/context.h"
#include "trainer/metrics/metric.h"

using kd::Tree;
using kd::train::Context;

namespace {

using kd::testing::make_metric;

double value_of(const kd::metrics::Metric& metric, const Tree& state) {
  return metric.compute(state).tensor().item<double>();
}

double one_step(const std::string& yaml, const Context& ctx) {
  const auto metric = make_metric(yaml);
  return value_of(*metric, metric->get_state(ctx));
}

Context classification_ctx(const torch::Tensor& logits, const torch::Tensor& labels) {
  return Context{.batch = Tree::dict({{"label", labels}}), .preds = Tree::dict({{"logits", logits}})};
}

using kd::testing::f64;

}  // namespace

TEST_CASE("Accuracy is the fraction of arg-max logits equal to the label", "[metrics]") {
  const torch::Tensor logits = f64({0.9, 0.1, 0.0, 0.2, 0.7, 0.1, 0.3, 0.3, 0.4, 0.5, 0.0, 0.5}).reshape({4, 3});
  // Arg-max: 0, 1, 2, 0.
  CHECK(one_step("type: Accuracy", classification_ctx(logits, torch::tensor({0, 1, 1, 0}))) == Approx(0.75));
  // Labels [B, 1] and one-hot labels are read the same way.
  CHECK(one_step("type: Accuracy", classification_ctx(logits, torch::tensor({0, 1, 1, 0}).reshape({4, 1}))) ==
        Approx(0.75));
  CHECK(one_step("type: Accuracy", classification_ctx(logits, torch::one_hot(torch::tensor({0, 1, 1, 0}), 3))) ==
        Approx(0.75));
}

TEST_CASE("Accuracy with a mask counts only the kept examples", "[metrics]") {
  const torch::Tensor logits = f64({1, 0, 0, 1, 1, 0}).reshape({3, 2});  // arg-max 0, 1, 0
  Context ctx = classification_ctx(logits, torch::tensor({0, 0, 1}));    // right, wrong, wrong
  ctx.batch = ctx.batch.set("mask", f64({1, 0, 1}));
  CHECK(one_step("type: Accuracy\nmask: batch.mask", ctx) == Approx(0.5));
}

TEST_CASE("Accuracy refuses class indices outside [0, C) and leaves out those equal to ignore_index", "[metrics]") {
  const torch::Tensor logits = f64({1, 0, 0, 1, 1, 0, 0, 1}).reshape({4, 2});  // arg-max 0, 1, 0, 1
  const torch::Tensor labels = torch::tensor({0, -100, 1, 2});
  CHECK_THROWS_WITH(one_step("type: Accuracy", classification_ctx(logits, labels)),
                    Catch::Contains("-100 (element 1, and 1 more), outside [0, 2)"));
  CHECK_THROWS_WITH(one_step("type: Accuracy\nignore_index: -100", classification_ctx(logits, labels)),
                    Catch::Contains("class index 2 (element 3)"));
  // Right, (ignored), wrong, right: 2 of 3.
  CHECK(one_step("type: Accuracy\nignore_index: -100", classification_ctx(logits, torch::tensor({0, -100, 1, 1}))) ==
        Approx(2.0 / 3.0));
}

TEST_CASE("Accuracy merged over uneven batches equals one pass over all the data", "[metrics]") {
  torch::manual_seed(0);
  const torch::Tensor logits = torch::randn({7, 4});
  const torch::Tensor labels = torch::randint(0, 4, {7}, torch::kLong);
  const auto metric = make_metric("type: Accuracy");
  const double whole = value_of(*metric, metric->get_state(classification_ctx(logits, labels)));
  Tree merged;
  for (const auto& [start, size] : std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 3}, {6, 1}}) {
    const Context ctx = classification_ctx(logits.narrow(0, start, size), labels.narrow(0, start, size));
    merged = metric->merge(merged, metric->get_state(ctx));
  }
  CHECK(value_of(*metric, merged) == whole);
  const double expected = (logits.argmax(-1) == labels).sum().item<double>() / 7.0;
  CHECK(whole == Approx(expected));
  // Averaging the batch accuracies instead (1/3 weight on one example) would differ in general.
  CHECK(merged.get("count").to_double() == 7.0);
}

TEST_CASE("BitsPerToken is the mean cross-entropy in bits, exact over batches", "[metrics]") {
  // Two sequences of two tokens over 3 classes; by hand: -log2 softmax(logits)[label].
  const torch::Tensor logits = f64({0, 0, 0, 2, 0, 0, 1, 2, 3, 0, 0, 4}).reshape({2, 2, 3});
  const torch::Tensor labels = torch::tensor({0, 0, 2, 1}).reshape({2, 2});
  const double l0 = std::log2(3.0);
  const double l1 = -std::log2(std::exp(2.0) / (std::exp(2.0) + 2));
  const double l2 = -std::log2(std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)));
  const double l3 = -std::log2(1 / (2 + std::exp(4.0)));
  CHECK(one_step("type: BitsPerToken", classification_ctx(logits, labels)) == Approx((l0 + l1 + l2 + l3) / 4));
  CHECK(one_step("type: BitsPerToken\nignore_index: 1", classification_ctx(logits, labels)) ==
        Approx((l0 + l1 + l2) / 3));
  // Merged over two batches of one sequence each: the mean over the four tokens.
  const auto metric = make_metric("type: BitsPerToken");
  const Tree a = metric->get_state(classification_ctx(logits.narrow(0, 0, 1), labels.narrow(0, 0, 1)));
  const Tree b = metric->get_state(classification_ctx(logits.narrow(0, 1, 1), labels.narrow(0, 1, 1)));
  CHECK(value_of(*metric, metric->merge(a, b)) == Approx((l0 + l1 + l2 + l3) / 4));
  CHECK_THROWS_WITH(
      one_step("type: BitsPerToken", classification_ctx(logits, torch::tensor({0, 3, 1, 1}).reshape({2, 2}))),
      Catch::Contains("outside [0, 3) of the logits' last axis"));
}

TEST_CASE("BinaryAccuracy compares logit > 0 with label > 0.5", "[metrics]") {
  const Context ctx = classification_ctx(f64({-1, 2, 0.5, -3}), f64({0, 1, 0, 1}));
  CHECK(one_step("type: BinaryAccuracy", ctx) == Approx(0.5));
}

TEST_CASE("Precision1 is whether the arg-max class is among the positive labels", "[metrics]") {
  const torch::Tensor logits = f64({0.1, 0.9, 0.0, 0.8, 0.1, 0.1, 0.0, 0.0, 1.0}).reshape({3, 3});
  const torch::Tensor labels = torch::tensor({0, 1, 1, 0, 1, 0, 1, 0, 1}).reshape({3, 3});
  CHECK(one_step("type: Precision1", classification_ctx(logits, labels)) == Approx(2.0 / 3.0));
}

TEST_CASE("RocAuc is the exact binary AUC with ties counted as one half", "[metrics]") {
  // Positives 0.4, 0.8, 0.4; negatives 0.1, 0.4: of the 6 pairs, 4 ordered and 2 tied -> 5 / 6.
  const auto metric = make_metric("type: RocAuc");
  const Tree a = metric->get_state(classification_ctx(f64({0.1, 0.4, 0.4}), torch::tensor({0, 0, 1})));
  const Tree b = metric->get_state(classification_ctx(f64({0.8, 0.4}), torch::tensor({1, 1})));
  CHECK(value_of(*metric, metric->merge(a, b)) == Approx(5.0 / 6.0));
  // Scores [B, 1] and labels [B, 1] give the same.
  const Context column = classification_ctx(f64({0.1, 0.4, 0.4, 0.8, 0.4}).reshape({5, 1}),
                                            torch::tensor({0, 0, 1, 1, 1}).reshape({5, 1}));
  CHECK(one_step("type: RocAuc", column) == Approx(5.0 / 6.0));
}

TEST_CASE("multi-class RocAuc averages one-vs-rest AUCs over the classes present", "[metrics]") {
  // Softmax rows: [a, b, b], [1/3]*3, [b, a, b], [1/3]*3 with a > 1/3 > b. Classes 0 and 1 are
  // present: renormalised over them, P(class 1) is b', 1/2, a', 1/2 with a' > 1/2 > b'; class 1's
  // positives a' and 1/2 against negatives b' and 1/2: 3 ordered pairs and 1 tie -> 0.875.
  const torch::Tensor logits = f64({2, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0}).reshape({4, 3});
  CHECK(one_step("type: RocAuc", classification_ctx(logits, torch::tensor({0, 0, 1, 1}))) == Approx(0.875));
}

TEST_CASE("RocAuc renormalises over the classes present, as Kauldron", "[metrics]") {
  // Class 2 is absent. Renormalised over classes 0 and 1, P(class 1) = sigmoid(l1 - l0):
  // 0.5, s(1), s(-1), 0.5 for labels 0, 1, 0, 1: positives s(1) and 0.5, negatives 0.5 and s(-1):
  // 3 ordered pairs and 1 tie -> 0.875. The raw softmax (not renormalised) would give
  // 1.0 for class 1 and 0.5 for class 0, a mean of 0.75.
  const torch::Tensor logits = f64({0, 0, 5, 0, 1, 0, 1, 0, 0, 0, 0, 0}).reshape({4, 3});
  CHECK(one_step("type: RocAuc", classification_ctx(logits, torch::tensor({0, 1, 0, 1}))) == Approx(0.875));
  // Masked-out rows do not count: dropping row 3 leaves positive s(1) against 0.5 and s(-1).
  Context masked = classification_ctx(logits, torch::tensor({0, 1, 0, 1}).reshape({4, 1}));
  masked.batch.insert("mask", f64({1, 1, 1, 0}).reshape({4, 1}));
  CHECK(one_step("type: RocAuc\nmask: batch.mask", masked) == Approx(1.0));
}

TEST_CASE("RocAuc with one class present is 0, as Kauldron", "[metrics]") {
  CHECK(one_step("type: RocAuc", classification_ctx(f64({1, 2, 3, 0, 0, 0}).reshape({2, 3}), torch::tensor({1, 1}))) ==
        0.0);
  CHECK(one_step("type: RocAuc", classification_ctx(f64({0.1, 0.9}), torch::tensor({0, 0}))) == 0.0);
}

TEST_CASE("Norm averages the norms over axis -1 by default, as Kauldron", "[metrics]") {
  // Rows [3, 4] and [0, 1]: norms 5 and 1.
  const Context rows{.preds = Tree::dict({{"x", f64({3, 4, 0, 1}).reshape({2, 2})}})};
  CHECK(one_step("type: Norm\ntensor: preds.x", rows) == Approx(3.0));
  CHECK(one_step("type: Norm\ntensor: preds.x\naxis: null", rows) == Approx(std::sqrt(26.0)));
  CHECK(one_step("type: Norm\ntensor: preds.x\naxis: 0", rows) == Approx((3.0 + std::sqrt(17.0)) / 2));
  CHECK(one_step("type: Norm\ntensor: preds.x\naxis: [0, 1]", rows) == Approx(std::sqrt(26.0)));
  CHECK(one_step("type: Norm\ntensor: preds.x\nord: 1", rows) == Approx((7.0 + 1.0) / 2));
  CHECK(one_step("type: Norm\ntensor: preds.x\nord: inf", rows) == Approx((4.0 + 1.0) / 2));
  // A per-row mask [B] or [B, 1] leaves rows out of the average.
  Context masked = rows;
  masked.batch = Tree::dict({{"m", f64({0, 1})}});
  CHECK(one_step("type: Norm\ntensor: preds.x\nmask: batch.m", masked) == Approx(1.0));
  masked.batch = Tree::dict({{"m", f64({1, 0}).reshape({2, 1})}});
  CHECK(one_step("type: Norm\ntensor: preds.x\nmask: batch.m", masked) == Approx(5.0));
  // Merged over steps by the number of rows: (5 + 1 + 2) / 3.
  const auto metric = make_metric("type: Norm\ntensor: preds.x");
  const Context one_row{.preds = Tree::dict({{"x", f64({0, 2}).reshape({1, 2})}})};
  CHECK(value_of(*metric, metric->merge(metric->get_state(rows), metric->get_state(one_row))) == Approx(8.0 / 3));
  CHECK_THROWS_AS(one_step("type: Norm\ntensor: preds.x\naxis: 2", rows), kd::TypeError);
}

TEST_CASE("Std is the standard deviation of all elements, merged exactly", "[metrics]") {
  const auto metric = make_metric("type: Std\nvalues: preds.x");
  const Context whole{.preds = Tree::dict({{"x", f64({1, 2, 3, 4})}})};
  CHECK(value_of(*metric, metric->get_state(whole)) == Approx(std::sqrt(1.25)));
  const Context a{.preds = Tree::dict({{"x", f64({1, 2})}})};
  const Context b{.preds = Tree::dict({{"x", f64({3, 4})}})};
  CHECK(value_of(*metric, metric->merge(metric->get_state(a), metric->get_state(b))) == Approx(std::sqrt(1.25)));
}

TEST_CASE("SingleDimension is the mean of one index of the last axis", "[metrics]") {
  const Context ctx{.preds = Tree::dict({{"x", f64({1, 10, 3, 20}).reshape({2, 2})}})};
  CHECK(one_step("type: SingleDimension\ntensor: preds.x\nindex: 1", ctx) == Approx(15.0));
  CHECK(one_step("type: SingleDimension\ntensor: preds.x\nindex: 0", ctx) == Approx(2.0));
}

TEST_CASE("Psnr of a constant error of 0.1 with range 1 is 20 dB", "[metrics]") {
  const torch::Tensor target = torch::full({2, 4, 4, 3}, 0.5, torch::kDouble);
  const Context ctx{.batch = Tree::dict({{"y", target}}), .preds = Tree::dict({{"x", target + 0.1}})};
  CHECK(one_step("type: Psnr\npred: preds.x\ntarget: batch.y", ctx) == Approx(20.0));
  // With range 2 the peak is 4 times the power: + 10 log10(4) dB.
  CHECK(one_step("type: Psnr\npred: preds.x\ntarget: batch.y\ndynamic_range: 2", ctx) ==
        Approx(20.0 + 10 * std::log10(4.0)));
}

TEST_CASE("Psnr averages the per-image values", "[metrics]") {
  const torch::Tensor target = torch::zeros({2, 3, 3, 1}, torch::kDouble);
  torch::Tensor pred = target.clone();
  pred[0].fill_(0.1);   // 20 dB
  pred[1].fill_(0.01);  // 40 dB
  const Context ctx{.batch = Tree::dict({{"y", target}}), .preds = Tree::dict({{"x", pred}})};
  CHECK(one_step("type: Psnr\npred: preds.x\ntarget: batch.y", ctx) == Approx(30.0));
}

TEST_CASE("Ssim of identical images is 1", "[metrics]") {
  torch::manual_seed(1);
  const torch::Tensor images = torch::rand({2, 16, 16, 3}, torch::kDouble);
  const Context ctx{.batch = Tree::dict({{"y", images}}), .preds = Tree::dict({{"x", images.clone()}})};
  CHECK(one_step("type: Ssim\npred: preds.x\ntarget: batch.y", ctx) == Approx(1.0));
}

TEST_CASE("Ssim of two constant images is the luminance term", "[metrics]") {
  // No variance: SSIM = (2ab + c1) / (a^2 + b^2 + c1) with c1 = 0.01^2.
  const Context ctx{.batch = Tree::dict({{"y", torch::full({1, 12, 13}, 0.25, torch::kDouble)}}),
                    .preds = Tree::dict({{"x", torch::full({1, 12, 13}, 0.5, torch::kDouble)}})};
  const double c1 = 1e-4;
  CHECK(one_step("type: Ssim\npred: preds.x\ntarget: batch.y", ctx) ==
        Approx((2 * 0.5 * 0.25 + c1) / (0.25 + 0.0625 + c1)));
}

TEST_CASE("the metric registry lists the thirteen built-in metrics", "[metrics]") {
  const auto& registry = kd::metrics::registry();
  CHECK(registry.names().size() == 13);
  for (const char* name : {"Accuracy", "BitsPerToken", "BinaryAccuracy", "Precision1", "RocAuc", "Norm", "Std",
                           "SingleDimension", "Psnr", "Ssim", "TreeMap", "TreeReduce", "SkipIfMissing"}) {
    CHECK(registry.contains(name));
  }
}

TEST_CASE("a metric records its keys with their defaults", "[metrics]") {
  const auto metric = make_metric("type: Accuracy\nlabels: batch.y");
  REQUIRE(metric->keys().size() == 2);
  CHECK(metric->keys()[0].first == "logits");
  CHECK(metric->keys()[0].second.str() == "preds.logits");
  CHECK(metric->keys()[1].second.str() == "batch.y");
}
