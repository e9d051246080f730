// kd's ResNet against torchvision's: torchvision builds resnet18/resnet50 (and resnet18 with the
// small stem) with random weights and BatchNorm statistics, saves its state_dict as safetensors
// and its logits for an input; kd's ResNet loads the file strictly (the same names, shapes and
// buffers) and gives the same logits in eval and in train mode.
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

constexpr const char* kTorchvision = R"(
import sys, torch, torchvision
from torch import nn
from safetensors.torch import save_file
out, name, stem = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
m = getattr(torchvision.models, name)(num_classes=10)
if stem == 'small':
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
for bn in m.modules():
    if isinstance(bn, nn.BatchNorm2d):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
state = {k: v.clone().contiguous() for k, v in m.state_dict().items()}
x = torch.randn(2, 40, 48, 3)  # [B, H, W, C], as kd's image sources give pictures
m.eval()
y_eval = m(x.permute(0, 3, 1, 2)).detach()
m.train()
y_train = m(x.permute(0, 3, 1, 2)).detach()
save_file(state, out + '/weights.safetensors')
save_file({'x': x, 'y_eval': y_eval, 'y_train': y_train}, out + '/io.safetensors')
)";

void compare_with_torchvision(const std::string& name, const std::string& depth, const std::string& stem) {
  const fs::path dir = kd::testing::made_fresh_dir("kd_resnet_");
  std::map<std::string, torch::Tensor> io = kd::testing::run_reference(dir, kTorchvision, name + " " + stem);
  const auto model =
      kd::testing::make_model("{type: ResNet, depth: " + depth + ", num_classes: 10, stem: " + stem + "}");
  const std::string report = kd::testing::load_reference_weights(*model, dir);
  CHECK_THAT(report, !Catch::Contains("not loaded"));
  const auto run = [&] {
    torch::NoGradGuard no_grad;
    return model->forward(kd::Tree::dict({{"x", io["x"]}})).get("logits").tensor();
  };
  model->eval();
  const torch::Tensor eval_logits = run();
  INFO("eval: largest difference " << (eval_logits - io["y_eval"]).abs().max().item<float>());
  CHECK(torch::allclose(eval_logits, io["y_eval"], 1e-4, 1e-4));
  model->train();
  const torch::Tensor train_logits = run();
  INFO("train: largest difference " << (train_logits - io["y_train"]).abs().max().item<float>());
  CHECK(torch::allclose(train_logits, io["y_train"], 1e-4, 1e-4));
  fs::remove_all(dir);
}

}  // namespace

TEST_CASE("ResNet-18 loads torchvision's resnet18 weights strictly and gives its logits") {
  compare_with_torchvision("resnet18", "18", "imagenet");
}

TEST_CASE("ResNet-50 (Bottlenecks) loads torchvision's resnet50 weights strictly and gives its logits") {
  compare_with_torchvision("resnet50", "50", "imagenet");
}

TEST_CASE("ResNet-18 with the small stem matches torchvision's resnet18 with a 3x3 stride-1 stem and no pool") {
  compare_with_torchvision("resnet18", "18", "small");
}

TEST_CASE("ResNet is built as torchvision builds it: parameter count, initialisation, options checked") {
  // torchvision: resnet18() 11,689,512 parameters, resnet34() 21,797,672, resnet50() 25,557,032.
  for (const auto& [depth, count] :
       std::vector<std::pair<int, int64_t>>{{18, 11'689'512}, {34, 21'797'672}, {50, 25'557'032}}) {
    const auto model =
        kd::testing::make_model("{type: ResNet, depth: " + std::to_string(depth) + ", num_classes: 1000}");
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    CHECK(n == count);
  }
  const auto zero = kd::testing::make_model("{type: ResNet, depth: 18, num_classes: 4, zero_init_residual: true}");
  const auto params = zero->named_parameters();
  CHECK(params["layer1.0.bn2.weight"].abs().sum().item<float>() == 0);
  CHECK(params["layer1.0.bn1.weight"].eq(1).all().item<bool>());
  // Kaiming-normal, fan_out: the std of conv1's 64*7*7 fan-out is sqrt(2 / 3136).
  const float std = params["conv1.weight"].std().item<float>();
  CHECK(std == Approx(std::sqrt(2.0 / 3136)).epsilon(0.05));
  CHECK_THROWS_WITH(kd::testing::make_model("{type: ResNet, depth: 20, num_classes: 4}"),
                    Catch::Contains("depth is 18, 34, 50, 101 or 152"));
  CHECK_THROWS_WITH(kd::testing::make_model("{type: ResNet, depth: 18, num_classes: 4, stem: cifar}"),
                    Catch::Contains("stem is imagenet"));
}
