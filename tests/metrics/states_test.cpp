#include "trainer/metrics/states.h"

#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <cmath>

#include "trainer/common/error.h"

using kd::Tree;
using kd::metrics::AverageState;
using kd::metrics::CollectFirstState;
using kd::metrics::CollectingState;

namespace {

Tree avg(double total, double count) {
  return AverageState::make(torch::tensor(total, torch::kDouble), torch::tensor(count, torch::kDouble));
}

Tree collected(std::vector<int64_t> ids) {
  const torch::Tensor t = torch::tensor(ids);
  return Tree::dict({{"ids", t}, {"twice", (2 * t).reshape({-1, 1})}});
}

std::vector<int64_t> ids_of(const Tree& state) {
  const torch::Tensor t = state.get("ids").tensor().contiguous();
  return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()};
}

}  // namespace

TEST_CASE("AverageState merge sums totals and counts and compute divides them", "[states]") {
  const Tree merged = AverageState::merge(avg(3, 2), avg(5, 6));
  CHECK(merged.get("total").tensor().item<double>() == 8.0);
  CHECK(merged.get("count").tensor().item<double>() == 8.0);
  CHECK(AverageState::compute(merged).item<double>() == 1.0);
}

TEST_CASE("a mean state {mean, count} merges as {mean * count, count}", "[states]") {
  const Tree m = AverageState::make_mean(torch::tensor(2.0, torch::kDouble), 3);
  CHECK(AverageState::compute(m).item<double>() == 2.0);
  CHECK(AverageState::total(m).item<double>() == 6.0);
  // Mean then mean, total then mean, mean then total: (6 + 4) / 4, (5 + 2) / 4, (2 + 5) / 4.
  const Tree a = AverageState::merge(m, AverageState::make_mean(torch::tensor(4.0, torch::kDouble), 1));
  CHECK(a.get("total").tensor().item<double>() == 10.0);
  CHECK(a.get("count").to_int() == 4);
  CHECK(AverageState::compute(a).item<double>() == 2.5);
  const Tree mean_of_one = AverageState::make_mean(torch::tensor(1.0, torch::kDouble), 2);
  const Tree total_of_two = AverageState::make(torch::tensor(5.0, torch::kDouble), int64_t{2});
  CHECK(AverageState::compute(AverageState::merge(total_of_two, mean_of_one)).item<double>() == 7.0 / 4.0);
  CHECK(AverageState::compute(AverageState::merge(mean_of_one, total_of_two)).item<double>() == 7.0 / 4.0);
}

TEST_CASE("AverageState merge is associative", "[states]") {
  const Tree a = avg(1, 1), b = avg(2, 3), c = avg(4, 5);
  const Tree left = AverageState::merge(AverageState::merge(a, b), c);
  const Tree right = AverageState::merge(a, AverageState::merge(b, c));
  CHECK(AverageState::compute(left).item<double>() == AverageState::compute(right).item<double>());
  CHECK(AverageState::compute(left).item<double>() == Approx(7.0 / 9.0));
}

TEST_CASE("AverageState merge with none returns the other state", "[states]") {
  const Tree s = avg(3, 2);
  CHECK(AverageState::merge(Tree(), s).is_same(s));
  CHECK(AverageState::merge(s, Tree()).is_same(s));
  CHECK(AverageState::merge(Tree(), Tree()).is_none());
}

TEST_CASE("AverageState keeps per-class shapes", "[states]") {
  const Tree s = AverageState::merge(AverageState::make(torch::tensor({1.0, 4.0}), torch::tensor({2.0, 2.0})),
                                     AverageState::make(torch::tensor({3.0, 0.0}), torch::tensor({2.0, 2.0})));
  CHECK(torch::allclose(AverageState::compute(s), torch::tensor({1.0, 1.0})));
}

TEST_CASE("an empty AverageState computes to NaN", "[states]") {
  CHECK(std::isnan(AverageState::compute(Tree()).item<double>()));
}

TEST_CASE("CollectingState concatenates every leaf along dimension 0 in merge order", "[states]") {
  const Tree merged = CollectingState::merge(collected({1, 2}), collected({3}));
  CHECK(ids_of(merged) == std::vector<int64_t>{1, 2, 3});
  CHECK(merged.get("twice").tensor().sizes() == torch::IntArrayRef{3, 1});
  CHECK(torch::equal(merged.get("twice").tensor().reshape({-1}), torch::tensor({2, 4, 6})));
}

TEST_CASE("CollectingState merge is associative", "[states]") {
  const Tree a = collected({1}), b = collected({2, 3}), c = collected({4});
  const Tree left = CollectingState::merge(CollectingState::merge(a, b), c);
  const Tree right = CollectingState::merge(a, CollectingState::merge(b, c));
  CHECK(ids_of(left) == ids_of(right));
  CHECK(ids_of(left) == std::vector<int64_t>{1, 2, 3, 4});
}

TEST_CASE("CollectingState merge with none returns the other state", "[states]") {
  const Tree s = collected({1, 2});
  CHECK(CollectingState::merge(Tree(), s).is_same(s));
  CHECK(CollectingState::merge(s, Tree()).is_same(s));
}

TEST_CASE("CollectingState refuses trees of different structures", "[states]") {
  const Tree other = Tree::dict({{"ids", torch::tensor({1})}});
  CHECK_THROWS_AS(CollectingState::merge(collected({1}), other), kd::Error);
}

TEST_CASE("CollectFirstState keeps only the first rows", "[states]") {
  const Tree merged = CollectFirstState::merge(collected({1, 2}), collected({3, 4}), 3);
  CHECK(ids_of(merged) == std::vector<int64_t>{1, 2, 3});
  CHECK(merged.get("twice").tensor().size(0) == 3);
  // A side over the limit is cut even when the other is none.
  CHECK(ids_of(CollectFirstState::merge(Tree(), collected({5, 6, 7, 8}), 2)) == std::vector<int64_t>{5, 6});
}

TEST_CASE("CollectFirstState merge is associative", "[states]") {
  const Tree a = collected({1}), b = collected({2, 3}), c = collected({4});
  const Tree left = CollectFirstState::merge(CollectFirstState::merge(a, b, 2), c, 2);
  const Tree right = CollectFirstState::merge(a, CollectFirstState::merge(b, c, 2), 2);
  CHECK(ids_of(left) == ids_of(right));
  CHECK(ids_of(left) == std::vector<int64_t>{1, 2});
}

TEST_CASE("AverageState counts stay integers when merged and mix with tensor counts") {
  const kd::Tree a = kd::metrics::AverageState::make(torch::tensor(3.0), int64_t{4});
  const kd::Tree b = kd::metrics::AverageState::make(torch::tensor(1.0), int64_t{4});
  const kd::Tree ab = kd::metrics::AverageState::merge(a, b);
  CHECK(ab.get("count").kind() == kd::Tree::Kind::kInt);
  CHECK(ab.get("count").to_int() == 8);
  CHECK(kd::metrics::AverageState::compute(ab).item<double>() == 0.5);
  const kd::Tree masked = kd::metrics::AverageState::make(torch::tensor(2.0), torch::tensor(2.0));
  const kd::Tree mixed = kd::metrics::AverageState::merge(ab, masked);
  CHECK(mixed.get("count").to_double() == 10.0);
  CHECK(kd::metrics::AverageState::compute(mixed).item<double>() == Approx(0.6));
  // Integer totals (counts of correct answers) are averaged in float64.
  const kd::Tree correct = kd::metrics::AverageState::make(torch::tensor(int64_t{1}), int64_t{3});
  CHECK(kd::metrics::AverageState::compute(correct).scalar_type() == torch::kDouble);
}
