// Transformer: a small stack of encoder blocks, optionally followed by decoder blocks.
//   Encoder input `x`: token ids [B, T] (set vocab_size) or features [B, T, F] (set input_size;
//   a [B, H, W] image is read as H tokens of W features).
//   Without decoder blocks, `pooling: mean` gives logits [B, output_size] (classification) and
//   `pooling: none` per-token logits [B, T, output_size].
//   With num_decoder_layers > 0 the model also reads `y`: target token ids [B, S] in
//   [0, output_size), decoded causally against the encoder output into logits [B, S, output_size].
//   Padding: `inputs: {mask: batch.mask}` names a [B, T] mask of the encoder's input (nonzero or
//   true: a real token, 0: padding, as Hugging Face's attention_mask): no token attends to
//   padding, in the encoder nor from the decoder, and mean pooling averages the real tokens only.
//   model: {type: Transformer, input_size: 28, d_model: 64, num_heads: 4, num_layers: 2,
//           output_size: 10, pooling: mean}
// Each block's output is recorded as interms.encoder.<i>.output / interms.decoder.<i>.output.
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/transformerlayer.h>

#include "trainer/common/error.h"
#include "trainer/common/tensor_text.h"
#include "trainer/models/builtins_internal.h"

namespace kd::models {
namespace {

class Transformer : public Model {
 public:
  explicit Transformer(const config::Node& o)
      : Model(o, default_inputs(o)), output_key_(o.get_string("output_key", "logits")) {
    for (const auto& [name, path] : input_keys()) masked_ = masked_ || name == "mask";
    const int64_t d_model = o.get_int_in("d_model", 64, 1, kMaxSize);
    const int64_t heads = o.get_int_in("num_heads", 4, 1, kMaxSize);
    const int64_t layers = o.get_int_in("num_layers", 2, 0, 1000);
    const int64_t decoder_layers = o.get_int_in("num_decoder_layers", 0, 0, 1000);
    const int64_t ff = o.get_int_in("dim_feedforward", 4 * d_model, 1, kMaxSize);
    const double dropout = o.get_double_in("dropout", 0.1, 0, 1);
    const int64_t max_length = o.get_int_in("max_length", 512, 1, kMaxSize);
    const int64_t vocab = o.get_int_in("vocab_size", 0, 0, kMaxSize);
    const int64_t input_size = o.get_int_in("input_size", 0, 0, kMaxSize);
    const int64_t output_size = o.get_int_in("output_size", std::nullopt, 1, kMaxSize);
    const std::string pooling = o.get_string("pooling", "mean");
    if (d_model % heads != 0) {
      throw ConfigError(o.where() + ": d_model (" + std::to_string(d_model) + ") must be divisible by num_heads (" +
                        std::to_string(heads) + ")");
    }
    if ((vocab > 0) == (input_size > 0)) {
      throw ConfigError(o.where() + ": set exactly one of vocab_size (token inputs) and input_size (feature inputs)");
    }
    if (pooling != "mean" && pooling != "none") {
      throw ConfigError(o.where() + ": pooling must be \"mean\" or \"none\", got \"" + pooling + "\"");
    }
    mean_pool_ = pooling == "mean" && decoder_layers == 0;
    if (vocab > 0) {
      token_embed_ = register_module("token_embed", torch::nn::Embedding(vocab, d_model));
    } else {
      input_proj_ = register_module("input_proj", torch::nn::Linear(input_size, d_model));
    }
    position_ = register_parameter("position", torch::randn({max_length, d_model}) * 0.02);
    auto block = torch::nn::TransformerEncoderLayerOptions(d_model, heads).dim_feedforward(ff).dropout(dropout);
    encoder_ = register_module("encoder", torch::nn::ModuleList());
    for (int64_t i = 0; i < layers; ++i) encoder_->push_back(torch::nn::TransformerEncoderLayer(block));
    if (decoder_layers > 0) {
      target_embed_ = register_module("target_embed", torch::nn::Embedding(output_size, d_model));
      auto dblock = torch::nn::TransformerDecoderLayerOptions(d_model, heads).dim_feedforward(ff).dropout(dropout);
      decoder_ = register_module("decoder", torch::nn::ModuleList());
      for (int64_t i = 0; i < decoder_layers; ++i) decoder_->push_back(torch::nn::TransformerDecoderLayer(dblock));
    }
    norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d_model})));
    head_ = register_module("head", torch::nn::Linear(d_model, output_size));
  }

  Tree forward(const Tree& inputs) override {
    IntermsRecorder* recorder = IntermsRecorder::current();
    torch::Tensor x = embed_inputs(inputs.at("x").tensor());                                          // [B, T, D]
    const torch::Tensor keep = masked_ ? read_mask(inputs.at("mask").tensor(), x) : torch::Tensor();  // [B, T]
    const torch::Tensor padding = masked_ ? keep.logical_not() : torch::Tensor();
    x = x.transpose(0, 1);  // LibTorch blocks take [T, B, D]
    for (const auto& layer : *encoder_) {
      x = layer->as<torch::nn::TransformerEncoderLayer>()->forward(x, /*src_mask=*/{}, padding);
      if (recorder) recorder->record(layer.get(), "output", x.transpose(0, 1));
    }
    if (decoder_) {
      const torch::Tensor y = inputs.at("y").tensor();
      check_length(y.size(1));
      torch::Tensor t = (target_embed_(y) + position_.narrow(0, 0, y.size(1))).transpose(0, 1);
      const torch::Tensor causal =
          torch::full({y.size(1), y.size(1)}, -std::numeric_limits<float>::infinity(), t.options()).triu(1);
      for (const auto& layer : *decoder_) {
        t = layer->as<torch::nn::TransformerDecoderLayer>()->forward(t, x, causal, /*memory_mask=*/{},
                                                                     /*tgt_key_padding_mask=*/{}, padding);
        if (recorder) recorder->record(layer.get(), "output", t.transpose(0, 1));
      }
      x = t;
    }
    x = norm_(x.transpose(0, 1));  // [B, T, D]
    if (mean_pool_) {
      if (masked_) {
        const torch::Tensor weights = keep.to(x.scalar_type()).unsqueeze(-1);  // [B, T, 1]
        x = (x * weights).sum(1) / weights.sum(1);
      } else {
        x = x.mean(1);
      }
    }
    return Tree::dict({{output_key_, head_(x)}});
  }

 private:
  static std::vector<std::pair<std::string, std::string>> default_inputs(const config::Node& o) {
    std::vector<std::pair<std::string, std::string>> out = {{"x", "batch.image"}};
    if (o.get_int_in("num_decoder_layers", 0, 0, 1000) > 0) out.emplace_back("y", "batch.target");
    if (auto given = o.find("inputs"); given && given->is_map() && given->has("mask"))
      out.emplace_back("mask", "batch.mask");
    return out;
  }

  // The padding mask as bool [B, T] (true: a real token), checked against the embedded input.
  static torch::Tensor read_mask(const torch::Tensor& mask, const torch::Tensor& x) {
    if (mask.dim() != 2 || mask.size(0) != x.size(0) || mask.size(1) != x.size(1)) {
      throw TypeError("the Transformer's mask must be [batch, tokens] = [" + std::to_string(x.size(0)) + ", " +
                      std::to_string(x.size(1)) + "] (nonzero: a real token, 0: padding), got " +
                      describe_tensor(mask));
    }
    torch::Tensor keep = mask.scalar_type() == torch::kBool ? mask : mask.ne(0);
    if (!keep.any(1).all().item<bool>()) {
      throw Error(
          "the Transformer's mask marks every token of a sequence as padding; each sequence needs one real token");
    }
    return keep;
  }

  torch::Tensor embed_inputs(torch::Tensor x) {
    torch::Tensor h;
    if (token_embed_) {
      h = token_embed_(x.to(torch::kLong));
    } else {
      if (!x.is_floating_point()) x = x.to(torch::kFloat);
      if (x.dim() == 4 && x.size(-1) == 1) x = x.squeeze(-1);  // [B, H, W, 1] image
      h = input_proj_(x);
    }
    check_length(h.size(1));
    return h + position_.narrow(0, 0, h.size(1));
  }

  void check_length(int64_t length) const {
    if (length > position_.size(0)) {
      throw Error("the Transformer got " + std::to_string(length) + " tokens but max_length is " +
                  std::to_string(position_.size(0)) + "; raise max_length in the model config");
    }
  }

  std::string output_key_;
  bool masked_ = false;
  bool mean_pool_ = true;
  torch::nn::Embedding token_embed_{nullptr};
  torch::nn::Linear input_proj_{nullptr};
  torch::Tensor position_;
  torch::nn::ModuleList encoder_{nullptr};
  torch::nn::Embedding target_embed_{nullptr};
  torch::nn::ModuleList decoder_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear head_{nullptr};
};

}  // namespace

void detail::register_transformer(config::Registry<Model>& r) {
  r.add(
      "Transformer", [](const config::Node& o) { return std::make_shared<Transformer>(o); },
      "vocab_size | input_size, d_model=64, num_heads=4, num_layers=2, num_decoder_layers=0, "
      "dim_feedforward=4*d_model, dropout=0.1, max_length=512, output_size, pooling=mean|none, inputs={x: "
      "batch.image, y: batch.target (with decoder layers), mask: a [B, T] padding mask (optional)}");
}

}  // namespace kd::models
