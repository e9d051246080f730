#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/data/transforms.h"

using kd::Tree;
using kd::config::Node;

namespace {

Tree apply(const std::string& yaml, const Tree& batch, uint64_t seed = 0) {
  auto t = kd::data::transform_registry().create(Node::parse(yaml));
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return t->apply(batch, g);
}

Tree images(const torch::Tensor& x) { return Tree::dict({{"image", x}, {"label", torch::tensor({1, 2})}}); }

}  // namespace

TEST_CASE("ValueRange maps the input range onto the output range as float") {
  const Tree out = apply("{type: ValueRange, key: image, in_vrange: [0, 255], vrange: [-1, 1]}",
                         images(torch::tensor({0, 255, 51}, torch::kByte).reshape({1, 3})));
  CHECK(out.get("image").tensor().scalar_type() == torch::kFloat);
  CHECK(torch::allclose(out.get("image").tensor(), torch::tensor({{-1.0f, 1.0f, -0.6f}})));
  CHECK(out.get("label").is_same(images(torch::zeros({1})).get("label")) == false);  // other keys kept
  CHECK(out.get("label").tensor().equal(torch::tensor({1, 2})));
}

TEST_CASE("Normalize subtracts the mean and divides by the std per channel") {
  const Tree out = apply("{type: Normalize, mean: [1, 2], std: [2, 4]}", images(torch::tensor({{{3.0f, 6.0f}}})));
  CHECK(torch::allclose(out.get("image").tensor(), torch::tensor({{{1.0f, 1.0f}}})));
  CHECK_THROWS_AS(apply("{type: Normalize, mean: [1], std: [0]}", images(torch::ones({1}))), kd::ConfigError);
}

TEST_CASE("Cast, Reshape and OneHot change dtype and shape per example") {
  CHECK(apply("{type: Cast, dtype: int64}", images(torch::ones({2, 2}))).get("image").tensor().scalar_type() ==
        torch::kLong);
  CHECK_THROWS_WITH(apply("{type: Cast, dtype: float33}", images(torch::ones({2}))),
                    Catch::Contains("unknown dtype \"float33\""));
  CHECK(apply("{type: Reshape, shape: [4, 1]}", images(torch::ones({2, 2, 2}))).get("image").tensor().sizes() ==
        torch::IntArrayRef({2, 4, 1}));
  const Tree hot = apply("{type: OneHot, key: label, num_classes: 3}", images(torch::ones({2})));
  CHECK(hot.get("label").tensor().equal(torch::tensor({{0.0f, 1.0f, 0.0f}, {0.0f, 0.0f, 1.0f}})));
}

TEST_CASE("RandomFlip with probability 1 mirrors every image left-right, 0 none") {
  const torch::Tensor x = torch::arange(8, torch::kFloat).reshape({2, 2, 2});
  CHECK(apply("{type: RandomFlip, probability: 1.0}", images(x)).get("image").tensor().equal(x.flip({2})));
  CHECK(apply("{type: RandomFlip, probability: 0.0}", images(x)).get("image").tensor().equal(x));
  CHECK(
      apply("{type: RandomFlip, probability: 1.0, axis: height}", images(x)).get("image").tensor().equal(x.flip({1})));
}

TEST_CASE("RandomFlip flips about half of a large batch, the same ones for the same seed") {
  const torch::Tensor x = torch::arange(2000, torch::kFloat).reshape({1000, 1, 2});
  const torch::Tensor a = apply("{type: RandomFlip}", images(x), 7).get("image").tensor();
  const torch::Tensor b = apply("{type: RandomFlip}", images(x), 7).get("image").tensor();
  CHECK(a.equal(b));
  const int64_t flipped = (a.select(2, 0) != x.select(2, 0)).sum().item<int64_t>();
  CHECK(flipped > 400);
  CHECK(flipped < 600);
}

TEST_CASE("RandomCrop with padding returns windows of the zero-padded image") {
  const torch::Tensor x = torch::ones({64, 4, 4});
  const torch::Tensor out = apply("{type: RandomCrop, size: [4, 4], padding: 1}", images(x), 3).get("image").tensor();
  CHECK(out.sizes() == torch::IntArrayRef({64, 4, 4}));
  // Each crop holds the 4x4 ones shifted by at most one pixel: between 9 and 16 ones.
  const torch::Tensor ones = out.sum({1, 2});
  CHECK(ones.min().item<float>() >= 9);
  CHECK(ones.max().item<float>() == 16);
  CHECK(ones.lt(16).any().item<bool>());  // some crops did shift
  const torch::Tensor nhwc =
      apply("{type: RandomCrop, size: [2, 3], padding: 0}", images(torch::rand({2, 4, 4, 3}))).get("image").tensor();
  CHECK(nhwc.sizes() == torch::IntArrayRef({2, 2, 3, 3}));
}

TEST_CASE("Elements keeps, drops and renames keys") {
  const Tree batch = images(torch::ones({2}));
  CHECK(apply("{type: Elements, keep: [label]}", batch).keys() == std::vector<std::string>{"label"});
  CHECK(apply("{type: Elements, drop: [label]}", batch).keys() == std::vector<std::string>{"image"});
  CHECK(apply("{type: Elements, rename: {image: x}}", batch).keys() == std::vector<std::string>{"x", "label"});
  CHECK_THROWS_WITH(apply("{type: Elements, keep: [labels]}", batch), Catch::Contains("no key \"labels\""));
}

TEST_CASE("a transform on a missing key names the batch keys and the nearest") {
  CHECK_THROWS_WITH(apply("{type: ValueRange, key: imgae}", images(torch::ones({2}))),
                    Catch::Contains("the batch has image, label. Did you mean \"image\"?"));
}

TEST_CASE("a transform that applies to stacked examples at once gives each the bits it gives it alone") {
  // Every registered transform, as configured for these examples; those that say applies_each
  // must transform the stack exactly as each example alone (a batch of one with its generator).
  const std::vector<std::string> configs = {
      "{type: ValueRange, in_vrange: [0, 255], vrange: [-1, 1]}",
      "{type: Normalize, mean: [0.5, 0.25, 0.125], std: [0.2, 0.3, 0.7]}",
      "{type: Cast, dtype: float16}",
      "{type: Reshape, shape: [-1]}",
      "{type: OneHot, num_classes: 5}",
      "{type: RandomFlip}",
      "{type: RandomFlip, axis: height, probability: 0.3}",
      "{type: RandomCrop, size: [5, 4], padding: 2}",
      "{type: RandomCrop, size: [6, 7], padding: 0}",
      "{type: Elements, rename: {image: picture}}",
      "{type: Resize, size: [4, 5]}",
      "{type: CenterCrop, size: [4, 4]}",
      "{type: ResizeSmall, size: 5}",
      "{type: RandomResizedCrop, size: [4, 4]}",
      "{type: InceptionCrop, size: [4, 4]}",
      "{type: Rearrange, pattern: \"h w c -> c h w\"}",
  };
  std::set<std::string> covered;
  const int64_t n = 9;
  const torch::Tensor pictures = torch::randint(0, 256, {n, 6, 7, 3}, torch::kByte);
  const Tree stacked = Tree::dict({{"image", pictures}, {"label", torch::arange(n) % 5}});
  for (const std::string& yaml : configs) {
    INFO(yaml);
    const Node node = Node::parse(yaml);
    covered.insert(node.get_string("type"));
    const auto t = kd::data::transform_registry().create(node);
    if (!t->applies_each()) continue;
    std::vector<at::Generator> generators;
    std::vector<Tree> alone;
    for (int64_t k = 0; k < n; ++k) {
      generators.push_back(at::make_generator<at::CPUGeneratorImpl>(1000 + k));
      at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 + k);
      alone.push_back(t->apply(stacked.map([&](const torch::Tensor& x) { return x.narrow(0, k, 1); }), g));
    }
    const Tree together = t->apply_each(stacked, generators);
    for (const auto& [path, leaf] : together.flatten()) {
      INFO(path);
      std::vector<torch::Tensor> rows;
      for (const Tree& a : alone) rows.push_back(a.get(path).tensor());
      CHECK(leaf.tensor().equal(torch::cat(rows)));
    }
    // The generators drew as much as each example's alone (the next transform goes on from there).
    for (int64_t k = 0; k < n; ++k) {
      at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 + k);
      t->apply(stacked.map([&](const torch::Tensor& x) { return x.narrow(0, k, 1); }), g);
      CHECK(at::rand({1}, generators[static_cast<std::size_t>(k)]).equal(at::rand({1}, g)));
    }
  }
  // Every transform kd registers is in the list above.
  for (const std::string& type : kd::data::transform_registry().names()) CHECK(covered.count(type) == 1);
}
