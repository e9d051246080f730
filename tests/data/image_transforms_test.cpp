#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/transforms.h"

using kd::Tree;
using kd::config::Node;

namespace {

torch::Tensor run_transform(const std::string& yaml, const torch::Tensor& image) {
  const auto t = kd::data::transform_registry().create(Node::parse(yaml, "t.yaml"));
  at::Generator gen = at::detail::createCPUGenerator(0);
  return t->apply(Tree::dict({{"image", image}}), gen).get("image").tensor();
}

}  // namespace

TEST_CASE("Resize: nearest repeats pixels, area averages them, integer images stay integers") {
  const torch::Tensor x = torch::tensor({{1, 2}, {3, 4}}, torch::kByte).reshape({1, 2, 2});
  const torch::Tensor up = run_transform("{type: Resize, size: [4, 4], method: nearest}", x);
  CHECK(up.scalar_type() == torch::kByte);
  CHECK(up.equal(
      torch::tensor({{1, 1, 2, 2}, {1, 1, 2, 2}, {3, 3, 4, 4}, {3, 3, 4, 4}}, torch::kByte).reshape({1, 4, 4})));
  // Halving a ramp by area: each output pixel is the mean of a 2x2 block.
  const torch::Tensor ramp = torch::arange(16, torch::kFloat).reshape({1, 4, 4});
  CHECK(run_transform("{type: Resize, size: [2, 2], method: area}", ramp)
            .equal(torch::tensor({{2.5f, 4.5f}, {10.5f, 12.5f}}).reshape({1, 2, 2})));
  // Channels last keep their place; a constant image stays constant under bilinear and bicubic.
  const torch::Tensor rgb = torch::full({2, 5, 7, 3}, 200, torch::kByte);
  for (const char* method : {"bilinear", "bicubic"}) {
    INFO(method);
    const torch::Tensor y = run_transform(std::string("{type: Resize, size: [3, 4], method: ") + method + "}", rgb);
    CHECK(y.sizes() == torch::IntArrayRef({2, 3, 4, 3}));
    CHECK(y.equal(torch::full({2, 3, 4, 3}, 200, torch::kByte)));
  }
  CHECK_THROWS_WITH(run_transform("{type: Resize, size: [3]}", rgb), Catch::Contains("size must be [height, width]"));
  CHECK_THROWS_WITH(run_transform("{type: Resize, size: [3, 3], method: lanczos}", rgb),
                    Catch::Contains("method must be bilinear, nearest, bicubic or area"));
  CHECK_THROWS_AS(run_transform("{type: Resize, size: [3, 3]}", torch::zeros({4})), kd::TypeError);
}

TEST_CASE("CenterCrop takes the middle window") {
  const torch::Tensor x = torch::arange(25).reshape({1, 5, 5});
  CHECK(run_transform("{type: CenterCrop, size: [3, 3]}", x)
            .equal(torch::tensor({{6, 7, 8}, {11, 12, 13}, {16, 17, 18}}).reshape({1, 3, 3})));
  // An even margin that does not halve: the extra row and column are cut at the end.
  CHECK(run_transform("{type: CenterCrop, size: [4, 4]}", x).equal(x.narrow(1, 0, 4).narrow(2, 0, 4)));
  CHECK_THROWS_WITH(run_transform("{type: CenterCrop, size: [6, 2]}", x), Catch::Contains("larger than the images"));
}

TEST_CASE("Rearrange moves, merges and splits axes of each example as einops does") {
  const torch::Tensor x = torch::arange(2 * 3 * 4 * 5).reshape({2, 3, 4, 5});
  CHECK(run_transform("{type: Rearrange, pattern: 'h w c -> c h w'}", x).equal(x.permute({0, 3, 1, 2})));
  CHECK(run_transform("{type: Rearrange, pattern: 'h w c -> (h w c)'}", x).equal(x.reshape({2, 60})));
  CHECK(run_transform("{type: Rearrange, pattern: 'h w c -> (w h) c'}", x)
            .equal(x.permute({0, 2, 1, 3}).reshape({2, 12, 5})));
  CHECK(run_transform("{type: Rearrange, pattern: '... c -> c ...'}", x).equal(x.permute({0, 3, 1, 2})));
  CHECK(run_transform("{type: Rearrange, pattern: '(h w) c -> h w c', axes_lengths: {h: 2}}", x.reshape({2, 12, 5}))
            .equal(x.reshape({2, 2, 6, 5})));
  CHECK_THROWS_WITH(run_transform("{type: Rearrange, pattern: 'h w c'}", x),
                    Catch::Contains("a pattern is \"left -> right\""));
  CHECK_THROWS_WITH(run_transform("{type: Rearrange, pattern: 'h w c -> h w'}", x),
                    Catch::Contains("must name the same axes"));
  CHECK_THROWS_WITH(run_transform("{type: Rearrange, pattern: 'h w -> w h'}", x),
                    Catch::Contains("its left side names 2 axes, but each example of \"image\" has 3"));
  CHECK_THROWS_WITH(run_transform("{type: Rearrange, pattern: '(h w) c -> h w c'}", x.reshape({2, 12, 5})),
                    Catch::Contains("give axes_lengths"));
  CHECK_THROWS_WITH(
      run_transform("{type: Rearrange, pattern: '(h w) c -> h w c', axes_lengths: {h: 5}}", x.reshape({2, 12, 5})),
      Catch::Contains("cannot be split"));
}

TEST_CASE("ResizeSmall brings the smaller side to size and keeps the aspect ratio") {
  const torch::Tensor x = torch::rand({2, 30, 60, 3});
  CHECK(run_transform("{type: ResizeSmall, size: 10}", x).sizes() == torch::IntArrayRef({2, 10, 20, 3}));
  CHECK(run_transform("{type: ResizeSmall, size: 45}", x.transpose(1, 2)).sizes() ==
        torch::IntArrayRef({2, 90, 45, 3}));
}

TEST_CASE("RandomResizedCrop: the whole image at scale 1 and its own ratio, the centre crop when no box fits") {
  const torch::Tensor x = torch::arange(2 * 8 * 8, torch::kFloat).reshape({2, 8, 8});
  // Scale 1 and the image's aspect ratio: the box is the image, resized as Resize would.
  CHECK(run_transform("{type: RandomResizedCrop, size: [4, 4], scale: [1, 1], ratio: [1, 1]}", x)
            .allclose(run_transform("{type: Resize, size: [4, 4]}", x)));
  // Ratio 4 cannot fit in a square at scale 1: torchvision's fallback, the centre 2 x 8 rows.
  CHECK(run_transform("{type: RandomResizedCrop, size: [2, 8], scale: [1, 1], ratio: [4, 4]}", x)
            .equal(x.narrow(1, 3, 2)));
  // Any draw: a box of the image (values of one image only), of the size asked for.
  const torch::Tensor y = run_transform("{type: InceptionCrop, size: [5, 3]}", x);
  CHECK(y.sizes() == torch::IntArrayRef({2, 5, 3}));
  CHECK(y[1].min().item<float>() >= 63.5f);
  CHECK_THROWS_WITH(run_transform("{type: RandomResizedCrop, size: [4, 4], scale: [0.5, 2]}", x),
                    Catch::Contains("at most 1"));
  CHECK_THROWS_WITH(run_transform("{type: RandomResizedCrop, size: [4, 4], ratio: [2, 1]}", x),
                    Catch::Contains("ratio must be [low, high]"));
}

TEST_CASE("bilinear resizing of uint8 pictures agrees with LibTorch's antialiased interpolate to one level") {
  torch::manual_seed(3);
  for (const auto& [from, to] :
       std::vector<std::pair<std::vector<int64_t>, std::string>>{{{2, 37, 53, 3}, "[224, 224]"},
                                                                 {{1, 300, 200, 3}, "[64, 96]"},
                                                                 {{2, 50, 50}, "[17, 80]"},
                                                                 {{1, 9, 9, 4}, "[9, 9]"}}) {
    INFO(to);
    const torch::Tensor x = torch::randint(0, 256, from, torch::kByte);
    const torch::Tensor fast = run_transform("{type: Resize, size: " + to + "}", x);
    // The reference: LibTorch's interpolate in float (which the float path calls), rounded.
    const torch::Tensor reference = run_transform("{type: Resize, size: " + to + "}", x.to(torch::kFloat));
    REQUIRE(fast.scalar_type() == torch::kByte);
    REQUIRE(fast.sizes() == reference.sizes());
    CHECK((fast.to(torch::kFloat) - reference.round().clamp(0, 255)).abs().max().item<float>() <= 1.0f);
  }
}
