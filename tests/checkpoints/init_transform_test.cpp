// init_transform's weights: a safetensors file written by PyTorch from a module built like kd's
// CNN (its state_dict, BatchNorm statistics included) loads into kd's CNN, which then gives
// PyTorch's logits for the same input in eval and in train mode.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <torch/torch.h>

#include "tests/step/test_helpers.h"
#include "tests/temp_dir.h"
#include "trainer/checkpoints/init_transform.h"
#include "trainer/checkpoints/safetensors.h"
#include "trainer/common/error.h"
#include "trainer/io/file_system.h"

namespace fs = std::filesystem;

namespace {

// kd's CNN {input_shape: [8, 8, 2], channels: [4, 6], hidden_size: 5, output_size: 3} in PyTorch,
// its head named `classifier` in a second file; random weights and BatchNorm statistics.
constexpr const char* kCnn = "{type: CNN, input_shape: [8, 8, 2], channels: [4, 6], hidden_size: 5, output_size: 3}";
constexpr const char* kWrite = R"(
import sys, torch
from torch import nn
from safetensors.torch import save_file
torch.manual_seed(0)
class Cnn(nn.Module):
    def __init__(self, head='head'):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2))
        setattr(self, head, nn.Sequential(nn.Linear(24, 5), nn.ReLU(), nn.Linear(5, 3)))
        self.head_name = head
    def forward(self, x):  # x: [B, H, W, C]
        return getattr(self, self.head_name)(self.features(x.permute(0, 3, 1, 2)).flatten(1))
m = Cnn()
for bn in (m.features[1], m.features[5]):
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    bn.num_batches_tracked.fill_(7)
x = torch.randn(4, 8, 8, 2)
state = {k: v.clone().contiguous() for k, v in m.state_dict().items()}  # before a train pass updates the statistics
m.eval()
y_eval = m(x)
m.train()
y_train = m(x)
save_file(state, sys.argv[1] + '/cnn.safetensors')
save_file({k.replace('head.', 'classifier.'): v for k, v in state.items()}, sys.argv[1] + '/renamed.safetensors')
save_file({k: v.half() for k, v in state.items() if v.is_floating_point()} |
          {k: v for k, v in state.items() if not v.is_floating_point()}, sys.argv[1] + '/half.safetensors')
save_file({'x': x, 'y_eval': y_eval.detach(), 'y_train': y_train.detach()}, sys.argv[1] + '/io.safetensors')
torch.save(state, sys.argv[1] + '/cnn.pt')
)";

fs::path write_files() {
  const fs::path dir = kd::testing::made_fresh_dir("kd_weights_");
  std::ofstream(dir / "write.py") << kWrite;
  const std::string command = std::string(KD_PYTHON) + " " + (dir / "write.py").string() + " " + dir.string();
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
  return dir;
}

std::string load(const std::string& yaml, kd::models::Model& model) {
  return kd::checkpoints::apply_init_transform(kd::testing::yaml(yaml), model, nullptr);
}

torch::Tensor logits(kd::models::Model& model, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return model.forward(kd::Tree::dict({{"x", x}})).get("logits").tensor();
}

}  // namespace

TEST_CASE("init_transform weights: PyTorch's state_dict in a safetensors file gives kd's CNN PyTorch's logits") {
  const fs::path dir = write_files();
  std::map<std::string, torch::Tensor> io;
  for (auto& [name, t] : kd::checkpoints::tensors_from_safetensors(
           kd::io::posix_file_system()->read_file((dir / "io.safetensors").string()), "io")) {
    io[name] = t;
  }
  const auto model = kd::testing::make_model(kCnn);
  const std::string report = load("{weights: " + (dir / "cnn.safetensors").string() + "}", *model);
  CHECK_THAT(report, Catch::StartsWith("loaded 16 tensors from "));  // 10 parameters, 3 buffers per BatchNorm
  model->eval();
  CHECK(torch::allclose(logits(*model, io["x"]), io["y_eval"], 1e-5, 1e-5));
  model->train();
  CHECK(torch::allclose(logits(*model, io["x"]), io["y_train"], 1e-5, 1e-5));

  // Renamed by a regular expression; without it, strict names every tensor that does not match.
  const auto renamed = kd::testing::make_model(kCnn);
  const std::string file = (dir / "renamed.safetensors").string();
  CHECK_THROWS_WITH(
      load("{weights: " + file + "}", *renamed),
      Catch::Contains("missing in the file (4): head.0.weight, head.0.bias, head.2.weight, head.2.bias") &&
          Catch::Contains("unexpected in the file (4): classifier.0.bias") && Catch::Contains("strict: false"));
  CHECK_THAT(load("{weights: " + file + ", rename: {'^classifier\\.': 'head.'}}", *renamed),
             Catch::StartsWith("loaded 16 tensors"));
  renamed->eval();
  CHECK(torch::allclose(logits(*renamed, io["x"]), io["y_eval"], 1e-5, 1e-5));

  // float16 in the file, float32 in the model: converted as copied.
  const auto half = kd::testing::make_model(kCnn);
  load("{weights: " + (dir / "half.safetensors").string() + "}", *half);
  half->eval();
  CHECK(torch::allclose(logits(*half, io["x"]), io["y_eval"], 1e-2, 1e-2));
  fs::remove_all(dir);
}

TEST_CASE("init_transform weights: mismatches are named, strict: false loads the rest, a pickle is refused") {
  const fs::path dir = write_files();
  const std::string file = (dir / "cnn.safetensors").string();
  // Another head: 4 outputs. strict lists the two head tensors; strict: false loads the other 14.
  const std::string other = "{type: CNN, input_shape: [8, 8, 2], channels: [4, 6], hidden_size: 5, output_size: 4}";
  const auto model = kd::testing::make_model(other);
  CHECK_THROWS_WITH(load("{weights: " + file + "}", *model),
                    Catch::Contains("shape or type mismatch (2): head.2.weight: model float32[4, 5], file "
                                    "float32[3, 5]"));
  const torch::Tensor head_before = model->named_parameters()["head.2.weight"].clone();
  const std::string report = load("{weights: " + file + ", strict: false}", *model);
  CHECK_THAT(report, Catch::StartsWith("loaded 14 tensors") && Catch::Contains("not loaded:"));
  CHECK(model->named_parameters()["head.2.weight"].equal(head_before));
  // select: only the features.
  const auto features = kd::testing::make_model(other);
  CHECK_THAT(load("{weights: " + file + ", select: ['params.features.**', 'collections.features.**']}", *features),
             Catch::StartsWith("loaded 12 tensors") && !Catch::Contains("not loaded"));

  CHECK_THROWS_WITH(load("{weights: " + (dir / "cnn.pt").string() + "}", *features),
                    Catch::Contains("reads safetensors files only (never a pickle)"));
  CHECK_THROWS_AS(load("{weights: " + (dir / "cnn.pt").string() + "}", *features), kd::CorruptionError);
  CHECK_THROWS_AS(load("{weights: " + (dir / "none.safetensors").string() + "}", *features), kd::IOError);
  CHECK_THROWS_WITH(load("{weights: " + file + ", use_ema: true}", *features),
                    Catch::Contains("init_transform.use_ema is for a kd checkpoint"));
  CHECK_THROWS_WITH(load("{weights: " + file + ", rename: {'(': x}}", *features),
                    Catch::Contains("is not a regular expression"));
  CHECK_THROWS_WITH(load("{weights: " + file + ", rename: {'^head\\.2': 'head.0'}}", *features),
                    Catch::Contains("one name"));
  CHECK_THROWS_WITH(load("{strict: false}", *features),
                    Catch::Contains("needs checkpoint") && Catch::Contains("weights"));
  fs::remove_all(dir);
}
