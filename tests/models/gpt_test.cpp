// kd's GPT against a nanoGPT-style PyTorch module written here (nanoGPT's model.py, reduced to the
// forward pass): PyTorch builds it with random weights (LayerNorm too), saves its state dict as
// safetensors and its logits for random tokens; kd's GPT loads the file strictly (nanoGPT's names)
// and gives the same logits. The tied embedding loads from either of its two names.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <torch/torch.h>

#include "tests/models/reference_models.h"
#include "tests/step/test_helpers.h"
#include "tests/temp_dir.h"
#include "trainer/checkpoints/init_transform.h"
#include "trainer/checkpoints/safetensors.h"
#include "trainer/common/error.h"
#include "trainer/io/file_system.h"

namespace fs = std::filesystem;

namespace {

constexpr const char* kNanoGpt = R"(
import math, sys, torch
from torch import nn
from torch.nn import functional as F
from safetensors.torch import save_file
out, bias, tied_names = sys.argv[1], sys.argv[2] == 'bias', sys.argv[3]
V, BLOCK, C, H, L = 37, 16, 24, 3, 2

class LayerNorm(nn.Module):
    def __init__(self, n, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None
    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)

class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(C, 3 * C, bias=bias)
        self.c_proj = nn.Linear(C, C, bias=bias)
    def forward(self, x):
        B, T, _ = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(torch.tril(torch.ones(T, T)) == 0, float('-inf'))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(C, 4 * C, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * C, C, bias=bias)
    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = LayerNorm(C, bias), CausalSelfAttention(), LayerNorm(C, bias), MLP()
    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(wte=nn.Embedding(V, C), wpe=nn.Embedding(BLOCK, C), drop=nn.Dropout(0.0),
                                              h=nn.ModuleList([Block() for _ in range(L)]), ln_f=LayerNorm(C, bias)))
        self.lm_head = nn.Linear(C, V, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
    def forward(self, idx):
        pos = torch.arange(idx.size(1))
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

torch.manual_seed(0)
m = GPT()
with torch.no_grad():
    for name, p in m.named_parameters():
        if 'ln' in name:
            p.uniform_(0.5, 1.5) if name.endswith('weight') else p.uniform_(-0.5, 0.5)
state = {k: v.clone().contiguous() for k, v in m.state_dict().items()}
if tied_names == 'lm_head':  # as safetensors.torch.save_model keeps a shared tensor
    del state['transformer.wte.weight']
elif tied_names == 'wte':
    del state['lm_head.weight']
elif tied_names == 'different':
    state['lm_head.weight'] = state['lm_head.weight'] + 1
x = torch.randint(0, V, (3, 11))
with torch.no_grad():
    y = m(x)
save_file(state, out + '/weights.safetensors')
save_file({'x': x, 'y': y}, out + '/io.safetensors')
)";

const char* kGpt = "{type: GPT, vocab_size: 37, block_size: 16, d_model: 24, num_heads: 3, num_layers: 2";

std::map<std::string, torch::Tensor> run_python(const fs::path& dir, bool bias, const std::string& tied) {
  return kd::testing::run_reference(dir, kNanoGpt, std::string(bias ? "bias" : "nobias") + " " + tied);
}

torch::Tensor logits(kd::models::Model& model, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  model.eval();
  return model.forward(kd::Tree::dict({{"x", x}})).get("logits").tensor();
}

}  // namespace

TEST_CASE("GPT loads a nanoGPT state dict strictly and gives its logits") {
  for (const bool bias : {true, false}) {
    for (const std::string tied : {"both", "lm_head", "wte"}) {
      INFO("bias " << bias << ", tied weight saved as " << tied);
      const fs::path dir = kd::testing::made_fresh_dir("kd_gpt_");
      const auto io = run_python(dir, bias, tied);
      const auto model = kd::testing::make_model(std::string(kGpt) + ", bias: " + (bias ? "true" : "false") + "}");
      const std::string report = kd::testing::load_reference_weights(*model, dir);
      CHECK_THAT(report, !Catch::Contains("not loaded"));
      const torch::Tensor y = logits(*model, io.at("x"));
      INFO("largest difference " << (y - io.at("y")).abs().max().item<float>());
      CHECK(torch::allclose(y, io.at("y"), 1e-4, 1e-4));
      fs::remove_all(dir);
    }
  }
}

TEST_CASE("GPT refuses a file whose two names of the tied embedding differ") {
  const fs::path dir = kd::testing::made_fresh_dir("kd_gpt_");
  run_python(dir, true, "different");
  const auto model = kd::testing::make_model(std::string(kGpt) + "}");
  CHECK_THROWS_WITH(kd::testing::load_reference_weights(*model, dir),
                    Catch::Contains("ties into one tensor (transformer.wte.weight)"));
  // Untied, the model has its own lm_head and the same file loads strictly.
  const auto untied = kd::testing::make_model(std::string(kGpt) + ", tie_embeddings: false}");
  CHECK_THAT(kd::testing::load_reference_weights(*untied, dir), !Catch::Contains("not loaded"));
  CHECK(untied->named_parameters()["lm_head.weight"].equal(untied->named_parameters()["transformer.wte.weight"] + 1));
  fs::remove_all(dir);
}

TEST_CASE("GPT is causal, starts as nanoGPT does and checks its tokens") {
  torch::manual_seed(1);
  const auto model = kd::testing::make_model(std::string(kGpt) + ", dropout: 0.1}");
  const auto params = model->named_parameters();
  // One tensor for the tied embedding: nanoGPT's 2-layer model without lm_head.weight.
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  // wte 37*24, wpe 16*24, per block 2 LayerNorms (2*24 each), c_attn 24*72+72, c_proj 24*24+24,
  // c_fc 24*96+96, c_proj 96*24+24; ln_f 2*24.
  CHECK(n == 37 * 24 + 16 * 24 + 2 * (4 * 24 + 24 * 72 + 72 + 24 * 24 + 24 + 24 * 96 + 96 + 96 * 24 + 24) + 2 * 24);
  CHECK(params.find("lm_head.weight") == nullptr);
  CHECK(params["transformer.h.0.attn.c_attn.bias"].abs().sum().item<float>() == 0);
  // Residual projections: N(0, 0.02 / sqrt(2 * num_layers)); the rest N(0, 0.02).
  const auto big = kd::testing::make_model(
      "{type: GPT, vocab_size: 512, block_size: 64, d_model: 256, num_heads: 4, num_layers: 8}");
  const auto big_params = big->named_parameters();
  CHECK(big_params["transformer.h.3.mlp.c_proj.weight"].std().item<float>() ==
        Approx(0.02 / std::sqrt(16.0)).epsilon(0.03));
  CHECK(big_params["transformer.h.3.mlp.c_fc.weight"].std().item<float>() == Approx(0.02).epsilon(0.03));
  CHECK(big_params["transformer.wte.weight"].std().item<float>() == Approx(0.02).epsilon(0.03));
  // Causal: changing the last token changes no earlier position's logits.
  torch::Tensor x = torch::randint(0, 37, {2, 9});
  const torch::Tensor before = logits(*model, x);
  x.index_put_({torch::indexing::Slice(), 8}, (x.select(1, 8) + 1) % 37);
  const torch::Tensor after = logits(*model, x);
  CHECK(torch::allclose(after.narrow(1, 0, 8), before.narrow(1, 0, 8), 1e-6, 1e-6));
  CHECK(!after.select(1, 8).equal(before.select(1, 8)));
  CHECK_THROWS_WITH(logits(*model, torch::zeros({1, 17}, torch::kLong)), Catch::Contains("block_size is 16"));
  CHECK_THROWS_WITH(logits(*model, torch::full({1, 4}, 37, torch::kLong)),
                    Catch::Contains("token ids must be in [0, vocab_size = 37)"));
  CHECK_THROWS_WITH(logits(*model, torch::zeros({1, 4})), Catch::Contains("integer token ids"));
  CHECK_THROWS_WITH(kd::testing::make_model("{type: GPT, vocab_size: 8, d_model: 10, num_heads: 3}"),
                    Catch::Contains("must be divisible by num_heads"));
}
