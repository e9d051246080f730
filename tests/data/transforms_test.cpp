#include <catch2/catch.hpp>

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
