// CNN: blocks of conv 3x3 -> BatchNorm -> ReLU -> max-pool 2x2, then an optional hidden dense
// layer and a Linear to output_size. Images are NHWC (Kauldron's layout): [B, H, W, C], or
// [B, H, W] for one channel. BatchNorm running statistics are buffers (`collections`).
//   model: {type: CNN, input_shape: [28, 28, 1], channels: [32, 64], hidden_size: 128,
//           output_size: 10, dropout: 0.0}
#include <string>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include "trainer/common/error.h"
#include "trainer/common/tensor_text.h"
#include "trainer/models/builtins_internal.h"

namespace kd::models {
namespace {

class Cnn : public Model {
 public:
  explicit Cnn(const config::Node& o)
      : Model(o, {{"x", "batch.image"}}), output_key_(o.get_string("output_key", "logits")) {
    const auto shape = o.get_int_list_in("input_shape", std::nullopt, 1, kMaxSize);
    if (shape.size() != 3) throw ConfigError(o.where() + ": input_shape must be [height, width, channels]");
    const auto channels = o.get_int_list_in("channels", std::vector<int64_t>{32, 64}, 1, kMaxSize);
    const int64_t kernel = o.get_int_in("kernel_size", 3, 1, 64);
    const int64_t hidden = o.get_int_in("hidden_size", 0, 0, kMaxSize);
    const int64_t output_size = o.get_int_in("output_size", std::nullopt, 1, kMaxSize);
    const double dropout = o.get_double_in("dropout", 0.0, 0, 1);

    features_ = register_module("features", torch::nn::Sequential());
    int64_t in = shape[2];
    for (int64_t c : channels) {
      features_->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, c, kernel).padding(kernel / 2).bias(false)));
      features_->push_back(torch::nn::BatchNorm2d(c));
      features_->push_back(torch::nn::ReLU());
      features_->push_back(torch::nn::MaxPool2d(2));
      in = c;
    }
    int64_t h = shape[0], w = shape[1];
    for (std::size_t i = 0; i < channels.size(); ++i) h /= 2, w /= 2;
    if (h < 1 || w < 1) throw ConfigError(o.where() + ": too many pooling blocks for the input_shape");
    head_ = register_module("head", torch::nn::Sequential());
    int64_t flat = in * h * w;
    if (dropout > 0) head_->push_back(torch::nn::Dropout(dropout));
    if (hidden > 0) {
      head_->push_back(torch::nn::Linear(flat, hidden));
      head_->push_back(torch::nn::ReLU());
      if (dropout > 0) head_->push_back(torch::nn::Dropout(dropout));
      flat = hidden;
    }
    head_->push_back(torch::nn::Linear(flat, output_size));
  }

  Tree forward(const Tree& inputs) override {
    torch::Tensor x = inputs.at("x").tensor();
    x = detail::images_channels_first(x, "CNN");
    x = run_recorded(*features_, x).flatten(1);
    return Tree::dict({{output_key_, run_recorded(*head_, x)}});
  }

 private:
  std::string output_key_;
  torch::nn::Sequential features_{nullptr};
  torch::nn::Sequential head_{nullptr};
};

}  // namespace

torch::Tensor detail::images_channels_first(torch::Tensor x, const char* model) {
  if (!x.is_floating_point()) x = x.to(torch::kFloat);
  if (x.dim() == 3) x = x.unsqueeze(-1);
  if (x.dim() != 4) {
    throw TypeError(std::string(model) + ": the input is [B, H, W, C] (or [B, H, W]), got " + describe_tensor(x));
  }
  return x.permute({0, 3, 1, 2});  // NHWC -> NCHW
}

void detail::register_cnn(config::Registry<Model>& r) {
  r.add(
      "CNN", [](const config::Node& o) { return std::make_shared<Cnn>(o); },
      "input_shape [H, W, C], channels=[32, 64], kernel_size=3, hidden_size=0, output_size, dropout=0, "
      "output_key=logits");
}

}  // namespace kd::models
