#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>

#include <torch/script.h>
#include <torch/torch.h>

#include "tests/step/test_helpers.h"
#include "trainer/common/error.h"
#include "trainer/step/train_step.h"

using kd::Tree;
using kd::testing::aux_with;
using kd::testing::make_model;
using kd::testing::yaml;
using kd::train::Context;
using kd::train::TrainStep;

namespace {

std::vector<std::string> paths(const Tree& t) {
  std::vector<std::string> out;
  for (const auto& [p, leaf] : t.flatten()) out.push_back(p);
  return out;
}

Tree run_forward(kd::models::Model& model, const Tree& batch, bool record) {
  return kd::train::forward(model, Context{.batch = batch}, record).to_tree();
}

}  // namespace

TEST_CASE("the MLP flattens its input and names its layers by position") {
  torch::manual_seed(0);
  auto model = make_model("{type: MLP, input_size: 12, hidden_sizes: [5, 4], output_size: 2}");
  const Tree out = run_forward(*model, Tree::dict({{"image", torch::rand({3, 3, 4})}}), false);
  CHECK(out.get("preds.logits").tensor().sizes() == torch::IntArrayRef({3, 2}));
  CHECK(paths(kd::params_tree(*model)) == std::vector<std::string>{"layers.0.weight", "layers.0.bias",
                                                                   "layers.2.weight", "layers.2.bias",
                                                                   "layers.4.weight", "layers.4.bias"});
}

TEST_CASE("model inputs are path keys that YAML can point elsewhere") {
  torch::manual_seed(0);
  auto model = make_model("{type: MLP, input_size: 4, output_size: 2, inputs: {x: batch.features}}");
  CHECK(model->input_keys().front().second.str() == "batch.features");
  CHECK(run_forward(*model, Tree::dict({{"features", torch::rand({2, 4})}}), false)
            .get("preds.logits")
            .tensor()
            .size(0) == 2);
  CHECK_THROWS_WITH(run_forward(*model, Tree::dict({{"image", torch::rand({2, 4})}}), false),
                    Catch::Contains("reading model input \"x\"") && Catch::Contains("\"batch\" has: image"));
  CHECK_THROWS_WITH(make_model("{type: MLP, input_size: 4, output_size: 2, inputs: {z: batch.x}}"),
                    Catch::Contains("unknown key \"z\""));
}

TEST_CASE("the CNN keeps BatchNorm statistics as buffers and reads NHWC images") {
  torch::manual_seed(0);
  auto model = make_model("{type: CNN, input_shape: [8, 8, 1], channels: [4, 8], hidden_size: 16, output_size: 3}");
  const Tree out = run_forward(*model, Tree::dict({{"image", torch::rand({2, 8, 8, 1})}}), true);
  CHECK(out.get("preds.logits").tensor().sizes() == torch::IntArrayRef({2, 3}));
  CHECK(out.get("interms.features.3.output").tensor().sizes() == torch::IntArrayRef({2, 4, 4, 4}));
  const Tree buffers = kd::buffers_tree(*model);
  CHECK(paths(buffers) == std::vector<std::string>{"features.1.running_mean", "features.1.running_var",
                                                   "features.1.num_batches_tracked", "features.5.running_mean",
                                                   "features.5.running_var", "features.5.num_batches_tracked"});
  CHECK(buffers.get("features.1.num_batches_tracked").tensor().item<int64_t>() == 1);
}

TEST_CASE("the Transformer classifies token sequences and records every block") {
  torch::manual_seed(0);
  auto model =
      make_model("{type: Transformer, vocab_size: 11, d_model: 16, num_heads: 2, num_layers: 2, output_size: 5}");
  const Tree out = run_forward(*model, Tree::dict({{"image", torch::randint(0, 11, {3, 7})}}), true);
  CHECK(out.get("preds.logits").tensor().sizes() == torch::IntArrayRef({3, 5}));
  CHECK(out.get("interms.encoder.1.output").tensor().sizes() == torch::IntArrayRef({3, 7, 16}));
}

TEST_CASE("the Transformer decoder maps target tokens to per-position logits, causally") {
  torch::manual_seed(0);
  auto model = make_model(
      "{type: Transformer, input_size: 6, d_model: 16, num_heads: 2, num_layers: 1, "
      "num_decoder_layers: 2, output_size: 9, dropout: 0.0}");
  model->eval();
  const torch::Tensor x = torch::rand({2, 5, 6});
  const torch::Tensor y = torch::randint(0, 9, {2, 4});
  const torch::Tensor logits =
      run_forward(*model, Tree::dict({{"image", x}, {"target", y}}), false).get("preds.logits").tensor();
  CHECK(logits.sizes() == torch::IntArrayRef({2, 4, 9}));
  // Changing the last target token must not change the logits of earlier positions.
  torch::Tensor y2 = y.clone();
  y2.index_put_({torch::indexing::Slice(), 3}, (y2.index({torch::indexing::Slice(), 3}) + 1) % 9);
  const torch::Tensor logits2 =
      run_forward(*model, Tree::dict({{"image", x}, {"target", y2}}), false).get("preds.logits").tensor();
  CHECK(torch::allclose(logits.narrow(1, 0, 3), logits2.narrow(1, 0, 3), 1e-5, 1e-5));
  CHECK_FALSE(torch::allclose(logits.narrow(1, 3, 1), logits2.narrow(1, 3, 1), 1e-5, 1e-5));
}

TEST_CASE("the Transformer's padding mask: padded tokens change nothing, in the encoder, the pooling and the decoder") {
  for (const bool decoder : {false, true}) {
    INFO("decoder " << decoder);
    torch::manual_seed(3);
    auto model =
        make_model(std::string("{type: Transformer, vocab_size: 11, d_model: 16, num_heads: 2, num_layers: 2, ") +
                   "output_size: 5, dropout: 0, num_decoder_layers: " + (decoder ? "1" : "0") +
                   ", inputs: {x: batch.tokens, mask: batch.mask" + (decoder ? ", y: batch.target" : "") + "}}");
    model->eval();
    const torch::Tensor tokens = torch::randint(0, 11, {2, 5});
    const torch::Tensor target = torch::randint(0, 5, {2, 4});
    const auto logits = [&](const torch::Tensor& x, const torch::Tensor& mask) {
      torch::NoGradGuard no_grad;
      return run_forward(*model, Tree::dict({{"tokens", x}, {"target", target}, {"mask", mask}}), false)
          .get("preds.logits")
          .tensor();
    };
    const torch::Tensor alone = logits(tokens, torch::ones({2, 5}, torch::kLong));
    // Three junk tokens after each sequence, masked out.
    const torch::Tensor padded = torch::cat({tokens, torch::randint(0, 11, {2, 3})}, 1);
    const torch::Tensor mask = torch::cat({torch::ones({2, 5}, torch::kLong), torch::zeros({2, 3}, torch::kLong)}, 1);
    if (decoder) {
      CHECK(torch::allclose(logits(padded, mask), alone, 1e-5, 1e-5));
    } else {
      CHECK(torch::allclose(logits(padded, mask), alone, 1e-5, 1e-5));
      CHECK_FALSE(torch::allclose(logits(padded, torch::ones({2, 8}, torch::kLong)), alone, 1e-3, 1e-3));
      // Sequences of different lengths in one batch: row 0 has 3 real tokens.
      const torch::Tensor short_mask = torch::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, torch::kBool).reshape({2, 5});
      const torch::Tensor first = logits(tokens.narrow(0, 0, 1).narrow(1, 0, 3), torch::ones({1, 3}, torch::kLong));
      CHECK(torch::allclose(logits(tokens, short_mask).narrow(0, 0, 1), first, 1e-5, 1e-5));
    }
    CHECK_THROWS_WITH(logits(tokens, torch::ones({2, 4})), Catch::Contains("mask must be [batch, tokens] = [2, 5]"));
    CHECK_THROWS_WITH(logits(tokens, torch::zeros({2, 5})), Catch::Contains("every token of a sequence as padding"));
  }
}

TEST_CASE("a TorchScript module is trained through kd and shares its parameters") {
  const std::string file = (std::filesystem::temp_directory_path() / "kd_models_test_linear.pt").string();
  {
    torch::jit::Module m("Linear");
    m.register_parameter("w", torch::ones({4, 2}).requires_grad_(), /*is_buffer=*/false);
    torch::jit::Module inner("Bias");
    inner.register_parameter("b", torch::zeros({2}).requires_grad_(), false);
    m.register_module("inner", inner);
    m.define("def forward(self, x):\n  return x.mm(self.w) + self.inner.b\n");
    m.save(file);
  }
  auto model = make_model("{type: TorchScript, path: " + file + "}");
  CHECK(paths(kd::params_tree(*model)) == std::vector<std::string>{"w", "inner.b"});
  TrainStep step(model, yaml("{type: sgd, learning_rate: 0.1}"),
                 aux_with("{type: L2, preds: preds.logits, targets: batch.label}"));
  const Tree batch = Tree::dict({{"image", torch::ones({3, 4})}, {"label", torch::zeros({3, 2})}});
  auto state = step.init();
  Context ctx;
  state = step.step(state, batch, {.context_out = &ctx}).first;
  CHECK(ctx.get("preds.logits").tensor().equal(torch::full({3, 2}, 4.0)));
  // d/dw mean((x w + b)^2) = 2 * x^T (x w + b) / 6 = 2 * 3 * 4 / 6 = 4 per entry; w -= 0.1 * 4.
  CHECK(torch::allclose(state.params.get("w").tensor(), torch::full({4, 2}, 0.6)));
  // The loaded module sees the update (b: 0 - 0.1 * 2 * 4 * 3 / 6 = -0.4).
  const Tree out = run_forward(*model, batch, false);
  CHECK(torch::allclose(out.get("preds.logits").tensor(), torch::full({3, 2}, 4 * 0.6 - 0.4)));
  std::remove(file.c_str());
}

TEST_CASE("a TorchScript module of several inputs gets each by its argument's name") {
  const std::string file = (std::filesystem::temp_directory_path() / "kd_models_test_masked.pt").string();
  {
    torch::jit::Module m("Masked");
    m.register_parameter("w", torch::full({1}, 3.0).requires_grad_(), /*is_buffer=*/false);
    m.define(
        "def forward(self, image, mask, offset: Optional[Tensor] = None):\n"
        "  out = image * mask * self.w\n"
        "  if offset is not None:\n"
        "    out = out + offset\n"
        "  return out\n");
    m.save(file);
  }
  const Tree batch = Tree::dict({{"pixels", torch::tensor({1.0, 2.0, 4.0})},
                                 {"keep", torch::tensor({1.0, 0.0, 1.0})},
                                 {"shift", torch::tensor({10.0, 10.0, 10.0})}});
  // Given in another order than forward's: passed by name.
  auto model = make_model("{type: TorchScript, path: " + file + ", inputs: {mask: batch.keep, image: batch.pixels}}");
  CHECK(run_forward(*model, batch, false).get("preds.logits").tensor().equal(torch::tensor({3.0, 0.0, 12.0})));
  auto with_offset = make_model("{type: TorchScript, path: " + file +
                                ", inputs: {image: batch.pixels, mask: batch.keep, offset: batch.shift}}");
  CHECK(run_forward(*with_offset, batch, false).get("preds.logits").tensor().equal(torch::tensor({13.0, 10.0, 22.0})));
  CHECK_THROWS_WITH(
      make_model("{type: TorchScript, path: " + file + ", inputs: {image: batch.pixels, msk: batch.keep}}"),
      Catch::Contains("has no argument \"msk\"; it takes (image, mask, offset)"));
  CHECK_THROWS_WITH(
      make_model("{type: TorchScript, path: " + file + ", inputs: {image: batch.pixels, offset: batch.shift}}"),
      Catch::Contains("needs \"mask\""));
  CHECK_THROWS_WITH(make_model("{type: TorchScript, path: " + file + "}"),
                    Catch::Contains("forward takes (image, mask, offset); map each to a path with inputs"));
  std::remove(file.c_str());
}

TEST_CASE("a missing TorchScript file is an IO error naming it and the key, in kd's words") {
  CHECK_THROWS_MATCHES(make_model("{type: TorchScript, path: /nonexistent/model.pt}"), kd::IOError,
                       Catch::Matchers::Predicate<kd::IOError>([](const kd::IOError& e) {
                         const std::string what = e.what();
                         return what.find("test.yaml:") != std::string::npos &&
                                what.find("\"/nonexistent/model.pt\" does not exist") != std::string::npos &&
                                what.find("torch.jit.save") != std::string::npos &&
                                what.find("No such file") == std::string::npos;  // not LibTorch's errno text
                       }));
  const std::string dir = std::filesystem::temp_directory_path().string();
  CHECK_THROWS_WITH(make_model("{type: TorchScript, path: " + dir + "}"), Catch::Contains("is not a regular file"));
}

TEST_CASE("a user model registered from C++ is built by name like the built-ins") {
  struct Doubler : kd::models::Model {
    explicit Doubler(const kd::config::Node& o) : Model(o, {{"x", "batch.x"}}) {
      scale = register_parameter("scale", torch::ones({1}));
    }
    Tree forward(const Tree& inputs) override {
      sow("input", inputs.at("x").tensor());
      return Tree::dict({{"y", inputs.at("x").tensor() * 2 * scale}});
    }
    torch::Tensor scale;
  };
  auto& registry = kd::models::registry();
  if (!registry.contains("TestDoubler")) {
    registry.add("TestDoubler", [](const kd::config::Node& o) { return std::make_shared<Doubler>(o); });
  }
  auto model = make_model("{type: TestDoubler}");
  const Tree out = run_forward(*model, Tree::dict({{"x", torch::ones({2})}}), true);
  CHECK(out.get("preds.y").tensor().equal(torch::full({2}, 2.0)));
  CHECK(out.get("interms.input").tensor().equal(torch::ones({2})));
}
