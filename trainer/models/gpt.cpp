// GPT: a decoder-only transformer language model (Radford et al., 2019) as nanoGPT builds it,
// with nanoGPT's parameter names (transformer.wte, transformer.wpe, transformer.h.<i>.ln_1,
// .attn.c_attn, .attn.c_proj, .ln_2, .mlp.c_fc, .mlp.c_proj, transformer.ln_f), so that a
// nanoGPT state dict saved as safetensors loads with init_transform: {weights: FILE}:
//
//   model: {type: GPT, vocab_size: 256, block_size: 256, num_layers: 6, num_heads: 6,
//           d_model: 384, dropout: 0.2, inputs: {x: batch.inputs}}
//
// The input is token ids [B, T] with T <= block_size; the output preds.logits [B, T, vocab_size],
// each position attending to itself and the positions before it (causal self-attention).
// Positions are learned (wpe). tie_embeddings: true (the default, as GPT-2) computes the logits
// with the token embedding's matrix: the model holds one tensor, transformer.wte.weight, which a
// PyTorch state dict may also name lm_head.weight (init_transform accepts either, see
// Model::tied_weights). bias: false leaves out the biases of the Linear and LayerNorm layers.
// Weights start as nanoGPT's: N(0, 0.02), the residual projections (c_proj) N(0, 0.02/sqrt(2 *
// num_layers)), biases 0, LayerNorm 1. Each block's output is recorded as
// interms.transformer.h.<i>.output.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/compat/torch_compat.h"
#include "trainer/models/builtins_internal.h"

namespace kd::models {
namespace {

// LayerNorm with an optional bias (LibTorch's has both or neither), named as PyTorch's.
class GptLayerNormImpl : public torch::nn::Module {
 public:
  GptLayerNormImpl(int64_t size, bool bias) {
    weight = register_parameter("weight", torch::ones({size}));
    if (bias) this->bias = register_parameter("bias", torch::zeros({size}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::layer_norm(x, {weight.size(0)}, weight, bias, 1e-5, /*cudnn_enable=*/true);
  }
  torch::Tensor weight, bias;
};
TORCH_MODULE(GptLayerNorm);

torch::nn::Linear gpt_linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  CausalSelfAttentionImpl(int64_t d_model, int64_t heads, double dropout, bool bias)
      : heads_(heads), dropout_(dropout) {
    c_attn = register_module("c_attn", gpt_linear(d_model, 3 * d_model, bias));
    c_proj = register_module("c_proj", gpt_linear(d_model, d_model, bias));
    resid_dropout_ = register_module("resid_dropout", torch::nn::Dropout(dropout));
  }

  // x [B, T, C].
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    const auto qkv = c_attn(x).split(C, 2);
    const auto heads = [&](const torch::Tensor& t) { return t.view({B, T, heads_, C / heads_}).transpose(1, 2); };
    const torch::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);  // [B, nh, T, hs]
    const torch::Tensor y = compat::causal_attention(q, k, v, is_training() ? dropout_ : 0.0);
    return resid_dropout_(c_proj(y.transpose(1, 2).contiguous().view({B, T, C})));
  }

  torch::nn::Linear c_attn{nullptr}, c_proj{nullptr};

 private:
  int64_t heads_;
  double dropout_;  // on the attention weights, in training
  torch::nn::Dropout resid_dropout_{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

class GptMlpImpl : public torch::nn::Module {
 public:
  GptMlpImpl(int64_t d_model, double dropout, bool bias) {
    c_fc = register_module("c_fc", gpt_linear(d_model, 4 * d_model, bias));
    c_proj = register_module("c_proj", gpt_linear(4 * d_model, d_model, bias));
    dropout_ = register_module("dropout", torch::nn::Dropout(dropout));
  }
  torch::Tensor forward(const torch::Tensor& x) { return dropout_(c_proj(torch::gelu(c_fc(x)))); }

  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};

 private:
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(GptMlp);

class GptBlockImpl : public torch::nn::Module {
 public:
  GptBlockImpl(int64_t d_model, int64_t heads, double dropout, bool bias) {
    ln_1 = register_module("ln_1", GptLayerNorm(d_model, bias));
    attn = register_module("attn", CausalSelfAttention(d_model, heads, dropout, bias));
    ln_2 = register_module("ln_2", GptLayerNorm(d_model, bias));
    mlp = register_module("mlp", GptMlp(d_model, dropout, bias));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x + attn(ln_1(x));
    return x + mlp(ln_2(x));
  }

  GptLayerNorm ln_1{nullptr}, ln_2{nullptr};
  CausalSelfAttention attn{nullptr};
  GptMlp mlp{nullptr};
};
TORCH_MODULE(GptBlock);

// nanoGPT's `transformer` ModuleDict.
class GptBodyImpl : public torch::nn::Module {
 public:
  GptBodyImpl(int64_t vocab, int64_t block_size, int64_t d_model, int64_t heads, int64_t layers, double dropout,
              bool bias) {
    wte = register_module("wte", torch::nn::Embedding(vocab, d_model));
    wpe = register_module("wpe", torch::nn::Embedding(block_size, d_model));
    drop = register_module("drop", torch::nn::Dropout(dropout));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < layers; ++i) h->push_back(GptBlock(d_model, heads, dropout, bias));
    ln_f = register_module("ln_f", GptLayerNorm(d_model, bias));
  }

  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::ModuleList h{nullptr};
  GptLayerNorm ln_f{nullptr};
};
TORCH_MODULE(GptBody);

class Gpt : public Model {
 public:
  explicit Gpt(const config::Node& o)
      : Model(o, {{"x", "batch.inputs"}}),
        output_key_(o.get_string("output_key", "logits")),
        vocab_(o.get_int_in("vocab_size", std::nullopt, 1, kMaxSize)),
        block_size_(o.get_int_in("block_size", 256, 1, kMaxSize)),
        tied_(o.get_bool("tie_embeddings", true)) {
    const int64_t d_model = o.get_int_in("d_model", 384, 1, kMaxSize);
    const int64_t heads = o.get_int_in("num_heads", 6, 1, kMaxSize);
    const int64_t layers = o.get_int_in("num_layers", 6, 1, 1000);
    const double dropout = o.get_double_in("dropout", 0.0, 0, 1);
    const bool bias = o.get_bool("bias", true);
    if (d_model % heads != 0) {
      throw ConfigError(o.where() + ": d_model (" + std::to_string(d_model) + ") must be divisible by num_heads (" +
                        std::to_string(heads) + ")");
    }
    transformer_ = register_module("transformer", GptBody(vocab_, block_size_, d_model, heads, layers, dropout, bias));
    if (!tied_) lm_head_ = register_module("lm_head", gpt_linear(d_model, vocab_, false));

    // nanoGPT's initialisation.
    torch::NoGradGuard no_grad;
    for (auto& module : modules(/*include_self=*/false)) {
      if (auto* linear = module->as<torch::nn::Linear>()) {
        torch::nn::init::normal_(linear->weight, 0.0, 0.02);
        if (linear->bias.defined()) torch::nn::init::zeros_(linear->bias);
      } else if (auto* embedding = module->as<torch::nn::Embedding>()) {
        torch::nn::init::normal_(embedding->weight, 0.0, 0.02);
      }
    }
    for (const auto& block : *transformer_->h) {
      auto* b = block->as<GptBlockImpl>();
      const double std = 0.02 / std::sqrt(2.0 * static_cast<double>(layers));
      torch::nn::init::normal_(b->attn->c_proj->weight, 0.0, std);
      torch::nn::init::normal_(b->mlp->c_proj->weight, 0.0, std);
    }
  }

  Tree forward(const Tree& inputs) override {
    const torch::Tensor& tokens = inputs.at("x").tensor();
    check_tokens(tokens);
    IntermsRecorder* recorder = IntermsRecorder::current();
    const int64_t T = tokens.size(1);
    const torch::Tensor idx = tokens.to(torch::kLong);
    const torch::Tensor positions = torch::arange(T, idx.options());
    torch::Tensor x = transformer_->drop(transformer_->wte(idx) + transformer_->wpe(positions));
    for (const auto& block : *transformer_->h) {
      x = block->as<GptBlockImpl>()->forward(x);
      if (recorder) recorder->record(block.get(), "output", x);
    }
    x = transformer_->ln_f(x);
    const torch::Tensor logits = tied_ ? torch::nn::functional::linear(x, transformer_->wte->weight) : lm_head_(x);
    return Tree::dict({{output_key_, logits}});
  }

  std::vector<std::pair<std::string, std::string>> tied_weights() const override {
    if (!tied_) return {};
    return {{"lm_head.weight", "transformer.wte.weight"}};
  }

 private:
  void check_tokens(const torch::Tensor& tokens) const {
    if (tokens.dim() != 2 || tokens.is_floating_point() || tokens.is_complex() ||
        tokens.scalar_type() == torch::kBool) {
      throw TypeError("GPT: its input x must be integer token ids [batch, time], got " +
                      std::string(tokens.dtype().name()) + " of " + std::to_string(tokens.dim()) +
                      " dimensions; point inputs.x at the tokens (TokenFile gives batch.inputs)");
    }
    if (tokens.size(1) > block_size_) {
      throw Error("GPT: got sequences of " + std::to_string(tokens.size(1)) + " tokens but block_size is " +
                  std::to_string(block_size_) + "; raise block_size in the model config or shorten the data's seq_len");
    }
    if (tokens.numel() == 0) return;
    const auto [low, high] = torch::aminmax(tokens);
    if (low.item<int64_t>() < 0 || high.item<int64_t>() >= vocab_) {
      throw Error("GPT: token ids must be in [0, vocab_size = " + std::to_string(vocab_) + "), got " +
                  std::to_string(low.item<int64_t>()) + " to " + std::to_string(high.item<int64_t>()) +
                  "; raise vocab_size in the model config");
    }
  }

  std::string output_key_;
  int64_t vocab_, block_size_;
  bool tied_;
  GptBody transformer_{nullptr};
  torch::nn::Linear lm_head_{nullptr};
};

}  // namespace

void detail::register_gpt(config::Registry<Model>& r) {
  r.add(
      "GPT", [](const config::Node& o) { return std::make_shared<Gpt>(o); },
      "vocab_size, block_size=256, num_layers=6, num_heads=6, d_model=384, dropout=0, bias=true, "
      "tie_embeddings=true, output_key=logits, inputs={x: batch.inputs} (token ids [B, T]); nanoGPT's parameter "
      "names");
}

}  // namespace kd::models
