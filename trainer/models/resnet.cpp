// ResNet (He et al., 2016) as torchvision builds it, with torchvision's parameter and buffer names
// (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc, ...), so that torchvision's weights,
// saved as safetensors, load with init_transform: {weights: resnet18.safetensors}:
//
//   model: {type: ResNet, depth: 18, num_classes: 1000, stem: imagenet, inputs: {x: batch.image}}
//
// depth 18 and 34 stack BasicBlocks, 50, 101 and 152 Bottlenecks (the stride on their 3x3
// convolution, torchvision's "ResNet v1.5"). stem: imagenet (a 7x7 convolution of stride 2 and a
// 3x3 max-pool of stride 2, torchvision's) or small (a 3x3 convolution of stride 1 and no pool,
// for 32x32 inputs such as CIFAR's; the parameter names stay torchvision's). The input is
// batch.image [B, H, W, C] (channels last, as kd's image sources give it; integers are taken as
// they are, so scale them with ValueRange or Normalize first) or [B, H, W] for one channel.
// Weights are initialised as torchvision does (Kaiming-normal convolutions, fan_out; BatchNorm 1
// and 0; zero_init_residual: true starts each block's last BatchNorm at 0).
#include <array>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/models/builtins_internal.h"

namespace kd::models {
namespace {

torch::nn::Conv2d resnet_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

// One residual block: BasicBlock (two 3x3 convolutions) or Bottleneck (1x1, 3x3, 1x1 to 4x the
// width), with a 1x1 convolution and BatchNorm on the shortcut where the shape changes.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(bool bottleneck, int64_t in, int64_t planes, int64_t stride) : bottleneck_(bottleneck) {
    const int64_t out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      conv1_ = register_module("conv1", resnet_conv(in, planes, 1, 1));
      bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
      conv2_ = register_module("conv2", resnet_conv(planes, planes, 3, stride));
      bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
      conv3_ = register_module("conv3", resnet_conv(planes, out, 1, 1));
      bn3_ = register_module("bn3", torch::nn::BatchNorm2d(out));
    } else {
      conv1_ = register_module("conv1", resnet_conv(in, planes, 3, stride));
      bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
      conv2_ = register_module("conv2", resnet_conv(planes, planes, 3, 1));
      bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
    }
    if (stride != 1 || in != out) {
      downsample_ = register_module(
          "downsample", torch::nn::Sequential(resnet_conv(in, out, 1, stride), torch::nn::BatchNorm2d(out)));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(bn1_(conv1_(x)));
    y = bn2_(conv2_(y));
    if (bottleneck_) y = bn3_(conv3_(torch::relu(y)));
    return torch::relu(y + (downsample_ ? downsample_->forward(x) : x));
  }

  // The BatchNorm whose output joins the shortcut (zero_init_residual starts it at 0).
  torch::nn::BatchNorm2d& last_norm() { return bottleneck_ ? bn3_ : bn2_; }

 private:
  bool bottleneck_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(ResidualBlock);

class ResNet : public Model {
 public:
  explicit ResNet(const config::Node& o)
      : Model(o, {{"x", "batch.image"}}), output_key_(o.get_string("output_key", "logits")) {
    const int64_t depth = o.get_int("depth", 50);
    const std::vector<std::pair<int64_t, std::array<int64_t, 4>>> kinds = {
        {18, {2, 2, 2, 2}}, {34, {3, 4, 6, 3}}, {50, {3, 4, 6, 3}}, {101, {3, 4, 23, 3}}, {152, {3, 8, 36, 3}}};
    std::array<int64_t, 4> blocks{};
    bool found = false;
    for (const auto& [d, b] : kinds) {
      if (d == depth) blocks = b, found = true;
    }
    if (!found) throw ConfigError(o.child("depth").where() + ": depth is 18, 34, 50, 101 or 152");
    const bool bottleneck = depth >= 50;
    const int64_t num_classes = o.get_int_in("num_classes", std::nullopt, 1, int64_t{1} << 24);
    const int64_t channels = o.get_int_in("input_channels", 3, 1, 4096);
    const std::string stem = o.get_string("stem", "imagenet");
    if (stem != "imagenet" && stem != "small") {
      throw ConfigError(o.child("stem").where() +
                        ": stem is imagenet (7x7 stride 2 and a max-pool) or small (3x3 "
                        "stride 1, no pool: for 32x32 inputs)");
    }
    small_stem_ = stem == "small";
    conv1_ = register_module("conv1", small_stem_ ? resnet_conv(channels, 64, 3, 1) : resnet_conv(channels, 64, 7, 2));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(64));
    int64_t in = 64;
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t planes = int64_t{64} << stage;
      torch::nn::Sequential layer;
      for (int64_t b = 0; b < blocks[static_cast<std::size_t>(stage)]; ++b) {
        layer->push_back(ResidualBlock(bottleneck, in, planes, b == 0 && stage > 0 ? 2 : 1));
        in = bottleneck ? planes * 4 : planes;
      }
      layers_[static_cast<std::size_t>(stage)] = register_module("layer" + std::to_string(stage + 1), layer);
    }
    fc_ = register_module("fc", torch::nn::Linear(in, num_classes));

    // torchvision's initialisation.
    torch::NoGradGuard no_grad;
    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* conv = module->as<torch::nn::Conv2d>()) {
        torch::nn::init::kaiming_normal_(conv->weight, 0, torch::kFanOut, torch::kReLU);
      } else if (auto* norm = module->as<torch::nn::BatchNorm2d>()) {
        torch::nn::init::ones_(norm->weight);
        torch::nn::init::zeros_(norm->bias);
      }
    }
    if (o.get_bool("zero_init_residual", false)) {
      for (auto& layer : layers_) {
        for (auto& block : *layer) torch::nn::init::zeros_(block.ptr<ResidualBlockImpl>()->last_norm()->weight);
      }
    }
  }

  Tree forward(const Tree& inputs) override {
    // Contiguous, as torchvision's convolutions see their input.
    torch::Tensor x = detail::images_channels_first(inputs.at("x").tensor(), "ResNet").contiguous();
    x = torch::relu(bn1_(conv1_(x)));
    if (!small_stem_) x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& layer : layers_) x = run_recorded(*layer, x);
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return Tree::dict({{output_key_, fc_(x)}});
  }

 private:
  std::string output_key_;
  bool small_stem_ = false;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::array<torch::nn::Sequential, 4> layers_{torch::nn::Sequential{nullptr}, torch::nn::Sequential{nullptr},
                                               torch::nn::Sequential{nullptr}, torch::nn::Sequential{nullptr}};
  torch::nn::Linear fc_{nullptr};
};

}  // namespace

void detail::register_resnet(config::Registry<Model>& r) {
  r.add(
      "ResNet", [](const config::Node& o) { return std::make_shared<ResNet>(o); },
      "depth=50 (18, 34: BasicBlocks; 50, 101, 152: Bottlenecks), num_classes, stem=imagenet|small, "
      "input_channels=3, zero_init_residual=false, output_key=logits, inputs={x: batch.image} ([B, H, W, C]); "
      "torchvision's parameter names");
}

}  // namespace kd::models
