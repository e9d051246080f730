// ViT (Dosovitskiy et al., 2021) as torchvision builds it (torchvision.models.VisionTransformer),
// with torchvision's parameter names (conv_proj, class_token, encoder.pos_embedding,
// encoder.layers.encoder_layer_<i>.ln_1, .self_attention.in_proj_weight, .self_attention.out_proj,
// .ln_2, .mlp.0, .mlp.3, encoder.ln, heads.head), so that torchvision's weights, saved as
// safetensors, load with init_transform: {weights: vit_b_16.safetensors}:
//
//   model: {type: ViT, image_size: 224, patch_size: 16, num_layers: 12, num_heads: 12,
//           hidden_dim: 768, mlp_dim: 3072, num_classes: 1000}     # torchvision's vit_b_16
//
// The image, batch.image [B, H, W, C] (channels last, as kd's image sources give it; [B, H, W]
// for one channel), is cut into patch_size x patch_size patches, each projected to hidden_dim
// (conv_proj); pooling: token (torchvision's) prepends a learned class token whose final state
// is classified, pooling: mean (big_vision's "gap") classifies the mean of the patches' final
// states and has no class token. Positions are learned (encoder.pos_embedding), so the image
// size is fixed: image_size (a number or [H, W]) must be a multiple of patch_size. LayerNorms use
// eps 1e-6, the MLP GELU; dropout after the embedding, in each MLP and after each attention,
// attention_dropout on the attention weights. Weights start as torchvision's (the head at 0).
// Each block's output is recorded as interms.encoder.layers.encoder_layer_<i>.output.
#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/models/builtins_internal.h"

namespace kd::models {
namespace {

torch::nn::LayerNorm vit_norm(int64_t width) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(1e-6));
}

class VitBlockImpl : public torch::nn::Module {
 public:
  VitBlockImpl(int64_t width, int64_t heads, int64_t mlp_dim, double dropout, double attention_dropout) {
    ln_1 = register_module("ln_1", vit_norm(width));
    self_attention = register_module(
        "self_attention",
        torch::nn::MultiheadAttention(torch::nn::MultiheadAttentionOptions(width, heads).dropout(attention_dropout)));
    dropout_ = register_module("dropout", torch::nn::Dropout(dropout));
    ln_2 = register_module("ln_2", vit_norm(width));
    mlp = register_module(
        "mlp", torch::nn::Sequential(torch::nn::Linear(width, mlp_dim), torch::nn::GELU(), torch::nn::Dropout(dropout),
                                     torch::nn::Linear(mlp_dim, width), torch::nn::Dropout(dropout)));
  }

  // x [B, T, D].
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = ln_1(x).transpose(0, 1);  // LibTorch's attention takes [T, B, D]
    h = std::get<0>(self_attention->forward(h, h, h, /*key_padding_mask=*/{}, /*need_weights=*/false)).transpose(0, 1);
    h = dropout_(h) + x;
    return h + mlp->forward(ln_2(h));
  }

  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  torch::nn::MultiheadAttention self_attention{nullptr};
  torch::nn::Sequential mlp{nullptr};

 private:
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(VitBlock);

class Vit : public Model {
 public:
  explicit Vit(const config::Node& o)
      : Model(o, {{"x", "batch.image"}}), output_key_(o.get_string("output_key", "logits")) {
    const auto size = o.child("image_size");
    std::vector<int64_t> image = size.is_sequence()
                                     ? o.get_int_list_in("image_size", std::nullopt, 1, 1 << 16)
                                     : std::vector<int64_t>(2, o.get_int_in("image_size", std::nullopt, 1, 1 << 16));
    if (image.size() != 2) throw ConfigError(size.where() + ": image_size is a number or [height, width]");
    patch_ = o.get_int_in("patch_size", 16, 1, 1 << 16);
    if (image[0] % patch_ != 0 || image[1] % patch_ != 0) {
      throw ConfigError(size.where() + ": image_size (" + std::to_string(image[0]) + "x" + std::to_string(image[1]) +
                        ") must be a multiple of patch_size (" + std::to_string(patch_) + ")");
    }
    image_ = {image[0], image[1]};
    const int64_t layers = o.get_int_in("num_layers", 12, 1, 1000);
    const int64_t heads = o.get_int_in("num_heads", 12, 1, kMaxSize);
    const int64_t width = o.get_int_in("hidden_dim", 768, 1, kMaxSize);
    const int64_t mlp_dim = o.get_int_in("mlp_dim", 4 * width, 1, kMaxSize);
    const int64_t classes = o.get_int_in("num_classes", std::nullopt, 1, kMaxSize);
    const int64_t channels = o.get_int_in("input_channels", 3, 1, 4096);
    const double dropout = o.get_double_in("dropout", 0.0, 0, 1);
    const double attention_dropout = o.get_double_in("attention_dropout", 0.0, 0, 1);
    const std::string pooling = o.get_string("pooling", "token");
    if (pooling != "token" && pooling != "mean") {
      throw ConfigError(o.child("pooling").where() +
                        ": pooling is token (a class token, torchvision's) or mean (the patches' mean), got \"" +
                        pooling + "\"");
    }
    if (width % heads != 0) {
      throw ConfigError(o.where() + ": hidden_dim (" + std::to_string(width) + ") must be divisible by num_heads (" +
                        std::to_string(heads) + ")");
    }
    class_token_ = pooling == "token";
    conv_proj_ = register_module("conv_proj",
                                 torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, width, patch_).stride(patch_)));
    if (class_token_) class_token = register_parameter("class_token", torch::zeros({1, 1, width}));
    const int64_t tokens = (image_[0] / patch_) * (image_[1] / patch_) + (class_token_ ? 1 : 0);
    encoder_ = register_module("encoder", std::make_shared<torch::nn::Module>("Encoder"));
    pos_embedding = encoder_->register_parameter("pos_embedding", torch::randn({1, tokens, width}) * 0.02);
    dropout_ = encoder_->register_module("dropout", torch::nn::Dropout(dropout));
    torch::OrderedDict<std::string, torch::nn::AnyModule> blocks;
    for (int64_t i = 0; i < layers; ++i) {
      blocks.insert("encoder_layer_" + std::to_string(i),
                    torch::nn::AnyModule(VitBlock(width, heads, mlp_dim, dropout, attention_dropout)));
    }
    layers_ = encoder_->register_module("layers", torch::nn::Sequential(std::move(blocks)));
    ln_ = encoder_->register_module("ln", vit_norm(width));
    heads_ = register_module("heads", std::make_shared<torch::nn::Module>("Heads"));
    head_ = heads_->register_module("head", torch::nn::Linear(width, classes));

    // torchvision's initialisation (MultiheadAttention starts as LibTorch's, the same as PyTorch's).
    torch::NoGradGuard no_grad;
    const double fan_in = static_cast<double>(channels * patch_ * patch_);
    torch::nn::init::normal_(conv_proj_->weight, 0.0, std::sqrt(1.0 / fan_in));
    torch::nn::init::zeros_(conv_proj_->bias);
    for (auto& block : *layers_) {
      for (const int index : {0, 3}) {
        auto& linear = *block.ptr<VitBlockImpl>()->mlp[static_cast<std::size_t>(index)]->as<torch::nn::Linear>();
        torch::nn::init::xavier_uniform_(linear.weight);
        torch::nn::init::normal_(linear.bias, 0.0, 1e-6);
      }
    }
    torch::nn::init::zeros_(head_->weight);
    torch::nn::init::zeros_(head_->bias);
  }

  Tree forward(const Tree& inputs) override {
    torch::Tensor x = detail::images_channels_first(inputs.at("x").tensor(), "ViT");
    if (x.size(2) != image_[0] || x.size(3) != image_[1]) {
      throw Error("ViT: got images of " + std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)) +
                  " but image_size is " + std::to_string(image_[0]) + "x" + std::to_string(image_[1]) +
                  " (its position embeddings are learned for that size); resize the images (Resize, CenterCrop) "
                  "or set image_size");
    }
    x = conv_proj_(x);                 // [B, D, H/p, W/p]
    x = x.flatten(2).transpose(1, 2);  // [B, N, D]
    if (class_token_) x = torch::cat({class_token.expand({x.size(0), -1, -1}), x}, 1);
    x = dropout_(x + pos_embedding);
    x = ln_(run_recorded(*layers_, x));
    x = class_token_ ? x.select(1, 0) : x.mean(1);
    return Tree::dict({{output_key_, head_(x)}});
  }

  torch::Tensor class_token, pos_embedding;

 private:
  std::string output_key_;
  int64_t patch_ = 16;
  std::array<int64_t, 2> image_{};
  bool class_token_ = true;
  torch::nn::Conv2d conv_proj_{nullptr};
  std::shared_ptr<torch::nn::Module> encoder_, heads_;
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Sequential layers_{nullptr};
  torch::nn::LayerNorm ln_{nullptr};
  torch::nn::Linear head_{nullptr};
};

}  // namespace

void detail::register_vit(config::Registry<Model>& r) {
  r.add(
      "ViT", [](const config::Node& o) { return std::make_shared<Vit>(o); },
      "image_size (a number or [H, W]), patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, "
      "mlp_dim=4*hidden_dim, num_classes, pooling=token|mean, dropout=0, attention_dropout=0, input_channels=3, "
      "output_key=logits, inputs={x: batch.image} ([B, H, W, C]); torchvision's parameter names");
}

}  // namespace kd::models
