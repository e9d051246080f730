// kd's ViT against torchvision's VisionTransformer: torchvision builds vit_b_16 and a small ViT with
// random weights (its zero-initialised head, class token and LayerNorms made random too), saves the
// state dict as safetensors and its logits for an input; kd's ViT loads the file strictly
// (torchvision's names) and gives the same logits.
#include <catch2/catch.hpp>

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

constexpr const char* kTorchvisionVit = R"(
import sys, torch, torchvision
from torchvision.models.vision_transformer import VisionTransformer
from safetensors.torch import save_file
out, kind = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if kind == 'vit_b_16':
    m, size, batch = torchvision.models.vit_b_16(num_classes=10), 224, 1
else:
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=96,
                          num_classes=10)
    size, batch = (32, 3)
with torch.no_grad():
    for name, p in m.named_parameters():
        if 'heads' in name or 'class_token' in name or 'ln' in name:
            p.normal_(0, 0.5)
state = {k: v.clone().contiguous() for k, v in m.state_dict().items()}
x = torch.randn(batch, size, size, 3)  # [B, H, W, C], as kd's image sources give pictures
m.eval()
with torch.no_grad():
    y = m(x.permute(0, 3, 1, 2))
save_file(state, out + '/weights.safetensors')
save_file({'x': x, 'y': y}, out + '/io.safetensors')
)";

void compare_with_torchvision(const std::string& kind, const std::string& model_yaml) {
  const fs::path dir = kd::testing::made_fresh_dir("kd_vit_");
  std::map<std::string, torch::Tensor> io = kd::testing::run_reference(dir, kTorchvisionVit, kind);
  const auto model = kd::testing::make_model(model_yaml);
  const std::string report = kd::testing::load_reference_weights(*model, dir);
  CHECK_THAT(report, !Catch::Contains("not loaded"));
  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Tensor y = model->forward(kd::Tree::dict({{"x", io["x"]}})).get("logits").tensor();
  INFO("largest difference " << (y - io["y"]).abs().max().item<float>());
  CHECK(torch::allclose(y, io["y"], 1e-4, 1e-4));
  fs::remove_all(dir);
}

}  // namespace

TEST_CASE("ViT loads torchvision's vit_b_16 weights strictly and gives its logits") {
  compare_with_torchvision("vit_b_16", "{type: ViT, image_size: 224, patch_size: 16, num_classes: 10}");
}

TEST_CASE("A small ViT matches torchvision's VisionTransformer with the same sizes") {
  compare_with_torchvision("small",
                           "{type: ViT, image_size: 32, patch_size: 8, num_layers: 2, num_heads: 4, "
                           "hidden_dim: 64, mlp_dim: 96, num_classes: 10}");
}

TEST_CASE("ViT is built as torchvision builds it: parameter count, pooling, options checked") {
  // torchvision: vit_b_16() has 86,567,656 parameters.
  const auto b16 = kd::testing::make_model("{type: ViT, image_size: 224, num_classes: 1000}");
  int64_t n = 0;
  for (const auto& p : b16->parameters()) n += p.numel();
  CHECK(n == 86'567'656);
  const auto params = b16->named_parameters();
  CHECK(params["heads.head.weight"].abs().sum().item<float>() == 0);
  CHECK(params["encoder.pos_embedding"].std().item<float>() == Approx(0.02).epsilon(0.05));
  CHECK(params["encoder.layers.encoder_layer_11.mlp.3.weight"].sizes() == torch::IntArrayRef({768, 3072}));
  // Mean pooling: no class token, one position per patch; gray 28x28 images in patches of 7.
  const auto mean = kd::testing::make_model(
      "{type: ViT, image_size: [28, 28], patch_size: 7, num_layers: 1, num_heads: 2, hidden_dim: 16, "
      "num_classes: 10, pooling: mean, input_channels: 1}");
  CHECK(mean->named_parameters().find("class_token") == nullptr);
  CHECK(mean->named_parameters()["encoder.pos_embedding"].sizes() == torch::IntArrayRef({1, 16, 16}));
  const torch::Tensor y = mean->forward(kd::Tree::dict({{"x", torch::rand({5, 28, 28})}})).get("logits").tensor();
  CHECK(y.sizes() == torch::IntArrayRef({5, 10}));
  CHECK_THROWS_WITH(mean->forward(kd::Tree::dict({{"x", torch::rand({5, 32, 32})}})),
                    Catch::Contains("image_size is 28x28"));
  CHECK_THROWS_WITH(kd::testing::make_model("{type: ViT, image_size: 30, patch_size: 8, num_classes: 2}"),
                    Catch::Contains("must be a multiple of patch_size"));
  CHECK_THROWS_WITH(kd::testing::make_model("{type: ViT, image_size: 32, patch_size: 8, num_classes: 2, pooling: gap}"),
                    Catch::Contains("pooling is token"));
}
