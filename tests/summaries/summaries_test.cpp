#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/context/context.h"
#include "trainer/summaries/summary.h"

using kd::Tree;
using kd::summaries::Summary;
using kd::train::Context;

namespace {

kd::summaries::SummaryPtr make_summary(const std::string& yaml) {
  return kd::summaries::registry().create(kd::config::Node::parse(yaml));
}

std::vector<int64_t> as_ints(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kLong).contiguous().reshape({-1});
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

std::vector<double> as_doubles(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kDouble).contiguous().reshape({-1});
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// Three 2x1 grey images [3, 2, 1, 1] with values 0 / 0.2, 0.6 / 1, 1.5 / -1.
torch::Tensor tiny_images() { return torch::tensor({0.0, 0.2, 0.6, 1.0, 1.5, -1.0}).reshape({3, 2, 1, 1}); }

}  // namespace

TEST_CASE("ShowImages lays the first images side by side with a 1-pixel gap", "[summaries]") {
  const auto summary = make_summary("type: ShowImages\nnum_images: 2");
  CHECK(summary->kind() == Summary::Kind::kImages);
  const Context ctx{.batch = Tree::dict({{"image", tiny_images()}})};
  const torch::Tensor grid = summary->compute(summary->get_state(ctx)).tensor();
  CHECK(grid.scalar_type() == torch::kUInt8);
  REQUIRE(grid.sizes() == torch::IntArrayRef{2, 3, 1});  // H, 2 * W + 1 gap, C
  // Rows: image 0, gap, image 1; values * 255 rounded.
  CHECK(as_ints(grid) == std::vector<int64_t>{0, 0, 153, 51, 0, 255});
}

TEST_CASE("ShowImages maps in_vrange to 0..255 and clamps outside it", "[summaries]") {
  const auto summary = make_summary("type: ShowImages\nin_vrange: [-1, 1]");
  const Context ctx{.batch = Tree::dict({{"image", tiny_images()}})};
  const torch::Tensor grid = summary->compute(summary->get_state(ctx)).tensor();
  REQUIRE(grid.sizes() == torch::IntArrayRef{2, 5, 1});
  // (v + 1) / 2 * 255: 0 -> 128 (127.5 rounds to even 128), 0.6 -> 204, 1.5 -> 255, ...
  CHECK(as_ints(grid) == std::vector<int64_t>{128, 0, 204, 0, 255, 153, 0, 255, 0, 0});
}

TEST_CASE("ShowImages keeps the first images over merged batches and accepts [B, H, W]", "[summaries]") {
  const auto summary = make_summary("type: ShowImages\nimages: preds.x\nnum_images: 3");
  const Context a{.preds = Tree::dict({{"x", torch::full({2, 1, 1}, 1.0)}})};
  const Context b{.preds = Tree::dict({{"x", torch::full({2, 1, 1}, 0.0)}})};
  const Tree state = summary->merge(summary->get_state(a), summary->get_state(b));
  const torch::Tensor grid = summary->compute(state).tensor();
  REQUIRE(grid.sizes() == torch::IntArrayRef{1, 5, 1});
  CHECK(as_ints(grid) == std::vector<int64_t>{255, 0, 255, 0, 0});
}

TEST_CASE("ShowImages reads RGB images channels-last or channels-first", "[summaries]") {
  const auto summary = make_summary("type: ShowImages\nimages: preds.x");
  const torch::Tensor hwc = torch::tensor({1.0, 0.0, 0.2}).reshape({1, 1, 1, 3});
  const Context last{.preds = Tree::dict({{"x", hwc}})};
  const Context first{.preds = Tree::dict({{"x", hwc.permute({0, 3, 1, 2})}})};
  const std::vector<int64_t> expected{255, 0, 51};
  CHECK(as_ints(summary->compute(summary->get_state(last)).tensor()) == expected);
  CHECK(as_ints(summary->compute(summary->get_state(first)).tensor()) == expected);
}

TEST_CASE("ShowDifferenceImages shows the absolute difference of two image batches", "[summaries]") {
  const auto summary = make_summary("type: ShowDifferenceImages\nimages1: preds.x\nimages2: batch.y");
  CHECK(summary->kind() == Summary::Kind::kImages);
  const Context ctx{.batch = Tree::dict({{"y", torch::tensor({0.2, 1.0}).reshape({2, 1, 1, 1})}}),
                    .preds = Tree::dict({{"x", torch::tensor({0.0, 0.6}).reshape({2, 1, 1, 1})}})};
  const torch::Tensor grid = summary->compute(summary->get_state(ctx)).tensor();
  REQUIRE(grid.sizes() == torch::IntArrayRef{1, 3, 1});
  CHECK(as_ints(grid) == std::vector<int64_t>{51, 0, 102});
}

TEST_CASE("Histogram counts values in equal buckets over their range", "[summaries]") {
  const auto summary = make_summary("type: Histogram\ntensor: preds.x\nnum_buckets: 4");
  CHECK(summary->kind() == Summary::Kind::kHistogram);
  const Context ctx{.preds = Tree::dict({{"x", torch::tensor({0.0, 1.0, 1.5, 2.5, 4.0, 4.0}).reshape({2, 3})}})};
  const Tree value = summary->compute(summary->get_state(ctx));
  CHECK(value.get("counts").tensor().scalar_type() == torch::kDouble);
  CHECK(as_doubles(value.get("edges").tensor()) == std::vector<double>{0, 1, 2, 3, 4});
  // [0, 1): 0; [1, 2): 1, 1.5; [2, 3): 2.5; [3, 4]: 4, 4.
  CHECK(as_doubles(value.get("counts").tensor()) == std::vector<double>{1, 2, 1, 2});
}

TEST_CASE("Histogram over a glob collects every leaf, across merged steps", "[summaries]") {
  const auto summary = make_summary("type: Histogram\ntensor: grads.**\nnum_buckets: 2");
  const Context a{.grads = Tree::dict({{"w", torch::tensor({0.0, 1.0})}, {"b", torch::tensor({2.0})}})};
  const Context b{.grads = Tree::dict({{"w", torch::tensor({4.0, 3.0})}, {"b", torch::tensor({3.5})}})};
  const Tree value = summary->compute(summary->merge(summary->get_state(a), summary->get_state(b)));
  CHECK(as_doubles(value.get("edges").tensor()) == std::vector<double>{0, 2, 4});
  CHECK(as_doubles(value.get("counts").tensor()) == std::vector<double>{2, 4});
}

TEST_CASE("ShowTexts keeps the first texts over merged steps", "[summaries]") {
  const auto summary = make_summary("type: ShowTexts\ntexts: preds.text\nnum_texts: 3");
  CHECK(summary->kind() == Summary::Kind::kTexts);
  const Context a{.preds = Tree::dict({{"text", Tree::list({"a", "b"})}})};
  const Context b{.preds = Tree::dict({{"text", Tree::list({"c", "d"})}})};
  const Context single{.preds = Tree::dict({{"text", "e"}})};
  const Tree value = summary->compute(summary->merge(summary->get_state(a), summary->get_state(b)));
  REQUIRE(value.is_list());
  REQUIRE(value.size() == 3);
  CHECK(value.at(std::size_t{0}).str() == "a");
  CHECK(value.at(std::size_t{2}).str() == "c");
  const Tree one = summary->compute(summary->get_state(single));
  REQUIRE(one.size() == 1);
  CHECK(one.at(std::size_t{0}).str() == "e");
}

TEST_CASE("the summary registry lists the four built-in summaries", "[summaries]") {
  const auto& registry = kd::summaries::registry();
  CHECK(registry.names().size() == 4);
  for (const char* name : {"ShowImages", "ShowDifferenceImages", "Histogram", "ShowTexts"})
    CHECK(registry.contains(name));
}
