#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "tests/step/test_helpers.h"
#include "trainer/common/error.h"
#include "trainer/step/precision.h"
#include "trainer/step/train_step.h"

using kd::Tree;
using kd::testing::aux_with;
using kd::testing::blobs;
using kd::testing::make_model;
using kd::testing::yaml;
using kd::train::Autocast;
using kd::train::AutocastGuard;
using kd::train::GradScaler;
using kd::train::GradScalerOptions;
using kd::train::Precision;
using kd::train::TrainStep;

namespace {

using kd::testing::kMlp;
using kd::testing::kXent;

std::vector<torch::Tensor> param_copies(TrainStep& step) {
  std::vector<torch::Tensor> out;
  for (const auto& p : step.model().parameters()) out.push_back(p.detach().clone());
  return out;
}

}  // namespace

TEST_CASE("precision: fp32 by default, bf16 anywhere, fp16 only on CUDA, grad_scaler only with fp16") {
  const c10::Device cpu(c10::kCPU), cuda(c10::kCUDA);
  CHECK(kd::train::parse_precision(yaml("{seed: 0}"), cpu) == Precision::kFp32);
  CHECK(kd::train::parse_precision(yaml("{precision: bf16}"), cpu) == Precision::kBf16);
  CHECK(kd::train::parse_precision(yaml("{precision: fp16}"), cuda) == Precision::kFp16);
  CHECK_THROWS_WITH(kd::train::parse_precision(yaml("{precision: fp8}"), cpu),
                    Catch::Contains("test.yaml:1:13: precision must be fp32, bf16 or fp16, got \"fp8\""));
  CHECK_THROWS_WITH(kd::train::parse_precision(yaml("{precision: fp16}"), cpu),
                    Catch::Contains("fp16 needs device: cuda") && Catch::Contains("use precision: bf16"));
  CHECK_THROWS_WITH(kd::train::parse_precision(yaml("{precision: bf16, grad_scaler: {init_scale: 8}}"), cpu),
                    Catch::Contains("grad_scaler is for precision: fp16"));
  CHECK_THROWS_WITH(GradScalerOptions::from_config(yaml("{backoff_factor: 2}")),
                    Catch::Contains("backoff_factor must be in (0, 1)"));
  CHECK_THROWS_WITH(GradScalerOptions::from_config(yaml("{init_scale: -1}")),
                    Catch::Contains("init_scale must be a finite number > 0"));
}

TEST_CASE("AutocastGuard runs matrix products in bfloat16 and puts the previous setting back") {
  const torch::Tensor a = torch::randn({4, 5}), b = torch::randn({5, 3});
  CHECK(a.mm(b).scalar_type() == torch::kFloat);
  {
    const AutocastGuard guard(Autocast{.precision = Precision::kBf16});
    CHECK(a.mm(b).scalar_type() == torch::kBFloat16);
    {
      const AutocastGuard none(Autocast{});  // fp32: changes nothing
      CHECK(a.mm(b).scalar_type() == torch::kBFloat16);
    }
    CHECK(a.mm(b).scalar_type() == torch::kBFloat16);
  }
  CHECK(a.mm(b).scalar_type() == torch::kFloat);
}

TEST_CASE("a bf16 forward gives float32 preds within bfloat16's rounding of the float32 forward") {
  torch::manual_seed(0);
  auto model = make_model("{type: MLP, input_size: 64, hidden_sizes: [], output_size: 10}");  // one Linear
  const torch::Tensor x = torch::randn({32, 64});
  const kd::train::Context ctx{.batch = Tree::dict({{"image", x}})};
  const torch::Tensor fp32 = kd::train::forward(*model, ctx, false).preds.get("logits").tensor();
  const torch::Tensor bf16 =
      kd::train::forward(*model, ctx, false, {.precision = Precision::kBf16}).preds.get("logits").tensor();
  CHECK(bf16.scalar_type() == torch::kFloat);
  CHECK(bf16.requires_grad());
  // Rounding x, w and b to bfloat16 (8 significant bits: relative error <= 2^-8 each), products
  // summed in float32, the sum rounded to bfloat16 once more: |error| <= 3 * 2^-8 * (|x| |w|^T + |b|)
  // plus 2^-8 |y|, doubled for the float32 sums' own error.
  torch::Tensor w, bias;
  for (const auto& p : model->named_parameters()) (p.key().find("weight") != std::string::npos ? w : bias) = p.value();
  REQUIRE(w.defined());
  REQUIRE(bias.defined());
  const torch::Tensor magnitude = x.abs().mm(w.abs().t()) + bias.abs();
  const torch::Tensor bound = 2 * (3 * std::ldexp(1.0, -8) * magnitude + std::ldexp(1.0, -8) * fp32.abs());
  CHECK(((bf16 - fp32).abs() <= bound.detach()).all().item<bool>());
  CHECK_FALSE(torch::equal(bf16, fp32));  // it did run in bfloat16
}

TEST_CASE("GradScaler: scale, unscale, overflow detection, backoff and growth as torch.amp.GradScaler") {
  GradScaler scaler(
      GradScalerOptions{.init_scale = 1024, .growth_factor = 2, .backoff_factor = 0.5, .growth_interval = 3});
  const torch::Tensor loss = torch::tensor(0.75);
  CHECK(scaler.scale(loss).item<double>() == 768.0);
  torch::Tensor p = torch::zeros({3}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({1024.0f, -2048.0f, 3.0f});
  CHECK_FALSE(scaler.unscale({p}));
  CHECK(torch::equal(p.grad(), torch::tensor({1.0f, -2.0f, 3.0f / 1024})));
  scaler.update(false);
  scaler.update(false);
  CHECK(scaler.current_scale() == 1024);
  CHECK(scaler.growth_tracker() == 2);
  scaler.update(false);  // the third finite step in a row: the scale grows
  CHECK(scaler.current_scale() == 2048);
  CHECK(scaler.growth_tracker() == 0);
  p.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 0.0f});
  CHECK(scaler.unscale({p}));
  scaler.update(true);
  CHECK(scaler.current_scale() == 1024);
  p.mutable_grad() = torch::tensor({std::nanf(""), 0.0f, 0.0f});
  CHECK(scaler.unscale({p}));

  GradScaler restored;
  restored.restore(scaler.state(), "ckpt");
  CHECK(restored.current_scale() == 1024);
  CHECK(restored.growth_tracker() == 0);
  Tree bad = Tree::dict();
  bad.insert("scale", -1.0);
  bad.insert("growth_tracker", int64_t{0});
  CHECK_THROWS_AS(restored.restore(bad, "ckpt"), kd::CorruptionError);
  CHECK_THROWS_AS(restored.restore(Tree::dict(), "ckpt"), kd::CorruptionError);
}

TEST_CASE("a step with loss scaling updates exactly as one without, and skips the update when the gradients overflow") {
  torch::manual_seed(0);
  TrainStep plain(make_model(kMlp), yaml("{type: adam, learning_rate: 0.01}"), aux_with(kXent));
  torch::manual_seed(0);
  TrainStep scaled(make_model(kMlp), yaml("{type: adam, learning_rate: 0.01}"), aux_with(kXent));
  scaled.set_grad_scaler(GradScalerOptions{.init_scale = 65536, .growth_interval = 2});
  auto a = plain.init();
  auto b = scaled.init();
  for (int i = 0; i < 5; ++i) {
    a = plain.step(a, blobs(32, i)).first;
    b = scaled.step(b, blobs(32, i)).first;
  }
  // Multiplying by a power of two and dividing by it again is exact in floating point.
  const auto pa = param_copies(plain), pb = param_copies(scaled);
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i], pb[i]));
  CHECK(scaled.grad_scaler()->current_scale() == 65536.0 * 4);  // grown twice in 5 steps
  CHECK(scaled.grad_scaler_skipped_steps() == 0);

  // A scale beyond float32's range makes the scaled loss infinite: no update, the scale halves.
  torch::manual_seed(0);
  TrainStep overflow(make_model(kMlp), yaml("{type: adam, learning_rate: 0.01}"), aux_with(kXent));
  overflow.set_grad_scaler(GradScalerOptions{.init_scale = 1e39});
  const auto before = param_copies(overflow);
  const auto [after, aux] = overflow.step(overflow.init(), blobs(32, 0));
  CHECK(after.step == 1);
  const auto now = param_copies(overflow);
  for (std::size_t i = 0; i < now.size(); ++i) CHECK(torch::equal(now[i], before[i]));
  CHECK(overflow.grad_scaler()->current_scale() == 5e38);
  CHECK(overflow.grad_scaler_skipped_steps() == 1);
  CHECK(overflow.skipped_steps() == 0);  // the loss itself was finite
}
