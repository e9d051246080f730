#include <catch2/catch.hpp>

#include <tuple>

#include <torch/torch.h>

#include "tests/step/test_helpers.h"
#include "trainer/common/error.h"
#include "trainer/optim/optimizer.h"
#include "trainer/step/train_step.h"

using kd::Tree;
using kd::testing::aux_with;
using kd::testing::blobs;
using kd::testing::make_model;
using kd::testing::yaml;
using kd::train::Context;
using kd::train::TrainStep;

namespace {

using kd::testing::kMlp;
using kd::testing::kXent;

bool trees_close(const Tree& a, const Tree& b, double tol = 1e-6) {
  const auto fa = a.flatten(), fb = b.flatten();
  if (fa.size() != fb.size()) return false;
  for (std::size_t i = 0; i < fa.size(); ++i) {
    if (fa[i].first != fb[i].first) return false;
    const Tree& x = fa[i].second;
    const Tree& y = fb[i].second;
    if (x.is_tensor() != y.is_tensor()) return false;
    if (x.is_tensor() ? !torch::allclose(x.tensor(), y.tensor(), tol, tol) : x.to_double() != y.to_double())
      return false;
  }
  return true;
}

}  // namespace

TEST_CASE("the step fills the context in lifecycle order and skips stages nothing reads") {
  torch::manual_seed(0);
  TrainStep step(make_model(kMlp), yaml("{type: adam, learning_rate: 0.01}"), aux_with(kXent));
  Context ctx;
  auto [state, aux] = step.step(step.init(), blobs(32, 1), {.context_out = &ctx});
  CHECK(state.step == 1);
  CHECK(ctx.step == 0);
  CHECK(ctx.preds.get("logits").tensor().sizes() == torch::IntArrayRef({32, 3}));
  CHECK(ctx.loss_total.tensor().dim() == 0);
  CHECK(ctx.loss_states.get("loss.count").to_int() == 32);  // the examples the loss averages
  CHECK(ctx.interms.is_none());
  CHECK(ctx.grads.is_none());
  CHECK(ctx.updates.is_none());
  CHECK(step.reads().grads == false);
  CHECK(compute_scalars(aux).front().first == "losses/loss");
}

TEST_CASE("grads in the context equal autograd's gradients of the loss") {
  torch::manual_seed(0);
  auto model = make_model(kMlp);
  TrainStep step(model, yaml("{type: sgd, learning_rate: 0.1}"), aux_with(kXent, {"grads.**"}));
  const Tree batch = blobs(16, 2);
  // Reference: the same loss on a copy of the initial parameters.
  std::vector<torch::Tensor> copies;
  for (const auto& p : model->parameters()) copies.push_back(p.detach().clone().requires_grad_());
  Context ctx;
  step.step(step.init(), batch, {.context_out = &ctx});
  const auto& w0 = copies[0];
  const auto& b0 = copies[1];
  const auto& w1 = copies[2];
  const auto& b1 = copies[3];
  const torch::Tensor logits = torch::relu(batch.get("image").tensor().mm(w0.t()) + b0).mm(w1.t()) + b1;
  torch::nn::functional::cross_entropy(logits, batch.get("label").tensor()).backward();
  CHECK(torch::allclose(ctx.get("grads.layers.0.weight").tensor(), w0.grad(), 1e-6, 1e-6));
  CHECK(torch::allclose(ctx.get("grads.layers.2.bias").tensor(), b1.grad(), 1e-6, 1e-6));
}

TEST_CASE("updates equal new minus old params, and params in the context are pre-update") {
  torch::manual_seed(0);
  auto model = make_model(kMlp);
  TrainStep step(model, yaml("{type: adam, learning_rate: 0.01}"), aux_with(kXent, {"updates.**", "params.**"}));
  const kd::train::TrainState init = step.init();
  const Tree before = init.params.map([](const torch::Tensor& t) { return t.detach().clone(); });
  Context ctx;
  auto [state, aux] = step.step(init, blobs(16, 3), {.context_out = &ctx});
  const Tree expected = state.params.map_with_path(
      [&](const kd::Path& p, const torch::Tensor& t) { return t.detach() - before.get(p).tensor(); });
  CHECK(trees_close(ctx.updates, expected));
  CHECK(trees_close(ctx.params, before));
  CHECK(ctx.get("updates.layers.0.weight").tensor().abs().sum().item<float>() > 0);
}

TEST_CASE("opt_state in the context is the optimizer state before the update") {
  torch::manual_seed(0);
  TrainStep step(make_model(kMlp), yaml("{type: adam, learning_rate: 0.01}"), aux_with(kXent, {"opt_state.**"}));
  auto [s1, a1] = step.step(step.init(), blobs(16, 4));
  const Tree after_first = s1.opt_state.map([](const torch::Tensor& t) { return t.detach().clone(); });
  Context ctx;
  auto [s2, a2] = step.step(s1, blobs(16, 5), {.context_out = &ctx});
  CHECK(trees_close(ctx.opt_state, after_first));
  CHECK(ctx.get("opt_state.layers.0.weight.step").to_int() == 1);
  CHECK(s2.opt_state.get("layers.0.weight.step").to_int() == 2);
  CHECK_FALSE(trees_close(s2.opt_state, after_first));
}

TEST_CASE("interms are recorded only when an auxiliary reads them") {
  torch::manual_seed(0);
  TrainStep step(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.1}"),
                 aux_with(kXent, {"interms.layers.1.output"}));
  Context ctx;
  step.step(step.init(), blobs(4, 6), {.context_out = &ctx});
  CHECK(ctx.get("interms.layers.0.output").tensor().sizes() == torch::IntArrayRef({4, 16}));
  CHECK(ctx.get("interms.layers.1.output").tensor().min().item<float>() >= 0);  // after ReLU
  CHECK(torch::allclose(ctx.get("interms.layers.2.output").tensor(), ctx.get("preds.logits").tensor()));
}

TEST_CASE("200 steps on a learnable task drive the loss down by a clear margin") {
  torch::manual_seed(0);
  TrainStep step(make_model(kMlp), yaml("{type: adam, learning_rate: 0.01}"), aux_with(kXent));
  auto state = step.init();
  double first = 0, last = 0;
  for (int i = 0; i < 200; ++i) {
    auto [next, aux] = step.step(state, blobs(64, 100 + i));
    state = next;
    const double loss = compute_scalars(aux).front().second;
    if (i == 0) first = loss;
    last = loss;
  }
  INFO("first loss " << first << ", last loss " << last);
  CHECK(last < 0.25 * first);
  CHECK(state.step == 200);
}

TEST_CASE("gradient accumulation over micro-batches matches one full-batch step") {
  const Tree batch = blobs(16, 7);
  auto run = [&](int k) {
    torch::manual_seed(0);
    TrainStep step(make_model(kMlp),
                   yaml("{type: sgd, learning_rate: 0.5, accumulate_steps: " + std::to_string(k) + "}"),
                   aux_with(kXent));
    auto state = step.init();
    for (int i = 0; i < 3; ++i) state = step.step(state, batch).first;
    return state.params.map([](const torch::Tensor& t) { return t.detach().clone(); });
  };
  CHECK(trees_close(run(1), run(4), 1e-5));
  torch::manual_seed(0);
  TrainStep bad(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.5, accumulate_steps: 3}"), aux_with(kXent));
  CHECK_THROWS_WITH(bad.step(bad.init(), batch), Catch::Contains("must divide the batch size"));
}

TEST_CASE("global-norm clipping bounds the update of plain SGD") {
  torch::manual_seed(0);
  TrainStep step(make_model(kMlp), yaml("{type: sgd, learning_rate: 1.0, clip_global_norm: 0.01}"),
                 aux_with(kXent, {"updates.**"}));
  Context ctx;
  step.step(step.init(), blobs(16, 8), {.context_out = &ctx});
  double sq = 0;
  for (const auto& [p, u] : ctx.updates.flatten()) sq += u.tensor().pow(2).sum().item<double>();
  CHECK(std::sqrt(sq) == Approx(0.01).epsilon(1e-3));
}

TEST_CASE("weight decay skips the parameters matched by weight_decay_exclude") {
  torch::manual_seed(0);
  TrainStep step(
      make_model(kMlp),
      yaml("{type: adamw, learning_rate: 0.01, weight_decay: 0.1, weight_decay_exclude: ['params.**.bias']}"),
      aux_with(kXent));
  const auto& groups = step.optimizer().torch_optimizer().param_groups();
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].params().size() == 2);  // the two weights
  CHECK(groups[1].params().size() == 2);  // the two biases
  CHECK(static_cast<const torch::optim::AdamWOptions&>(groups[0].options()).weight_decay() == 0.1);
  CHECK(static_cast<const torch::optim::AdamWOptions&>(groups[1].options()).weight_decay() == 0.0);
  // A pattern that chooses no param is a mistake, not a silent no-op.
  CHECK_THROWS_WITH(TrainStep(make_model(kMlp),
                              yaml("{type: adamw, learning_rate: 0.01, weight_decay: 0.1, "
                                   "weight_decay_exclude: ['params.**.bias', 'params.**.bais']}"),
                              aux_with(kXent)),
                    Catch::Contains("weight_decay_exclude \"params.**.bais\"") && Catch::Contains("chooses no param"));
}

TEST_CASE("the learning rate follows its schedule at each step") {
  torch::manual_seed(0);
  TrainStep step(
      make_model(kMlp),
      yaml("{type: sgd, learning_rate: {type: Linear, init_value: 1.0, end_value: 0.0, transition_steps: 10}}"),
      aux_with(kXent));
  auto state = step.init();
  state.step = 5;
  step.step(state, blobs(8, 9));
  CHECK(step.optimizer().torch_optimizer().param_groups()[0].options().get_lr() == Approx(0.5));
  CHECK(step.optimizer().schedules(7).front().second == Approx(0.3));
}

TEST_CASE("the EMA of params moves towards the params by 1 - decay per step") {
  torch::manual_seed(0);
  auto model = make_model(kMlp);
  TrainStep step(model, yaml("{type: sgd, learning_rate: 0.5, ema_decay: 0.9}"), aux_with(kXent));
  auto state = step.init();
  const Tree before = state.params.map([](const torch::Tensor& t) { return t.detach().clone(); });
  state = step.step(state, blobs(8, 10)).first;
  const torch::Tensor expected =
      0.9 * before.get("layers.0.weight").tensor() + 0.1 * state.params.get("layers.0.weight").tensor();
  CHECK(torch::allclose(step.optimizer().ema_params().get("layers.0.weight").tensor(), expected, 1e-6, 1e-6));
}

TEST_CASE("eval_step neither updates params nor BatchNorm statistics") {
  torch::manual_seed(0);
  TrainStep step(make_model("{type: CNN, input_shape: [8, 8, 1], channels: [4], output_size: 3}"),
                 yaml("{type: sgd, learning_rate: 0.1}"), aux_with(kXent));
  auto state = step.init();
  const Tree batch = Tree::dict({{"image", torch::rand({6, 8, 8})}, {"label", torch::tensor({0, 1, 2, 0, 1, 2})}});
  const Tree params_before = state.params.map([](const torch::Tensor& t) { return t.detach().clone(); });
  const Tree stats_before = state.collections.map([](const torch::Tensor& t) { return t.detach().clone(); });
  const auto aux = step.eval_step(state, batch);
  CHECK(compute_scalars(aux).front().first == "losses/loss");
  CHECK(trees_close(state.params, params_before));
  CHECK(trees_close(state.collections, stats_before));
  CHECK(step.model().is_training());
  step.step(state, batch);
  CHECK_FALSE(trees_close(state.collections, stats_before));  // a train step updates them
}

TEST_CASE("a failing loss names the loss and the missing key") {
  torch::manual_seed(0);
  TrainStep step(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.1}"),
                 aux_with("{type: SoftmaxCrossEntropyWithIntLabels, labels: batch.lable}"));
  CHECK_THROWS_WITH(step.step(step.init(), blobs(4, 11)),
                    Catch::StartsWith("computing the loss failed for loss 'losses/loss'") &&
                        Catch::Contains("Did you mean \"batch.label\"?"));
}

TEST_CASE("optimizer state exists from step 0 and training matches torch's lazy initialisation") {
  for (const std::string opt : {"{type: adam, learning_rate: 0.01}", "{type: sgd, learning_rate: 0.1, momentum: 0.9}",
                                "{type: rmsprop, learning_rate: 0.01, momentum: 0.5, centered: true}"}) {
    torch::manual_seed(0);
    TrainStep step(make_model(kMlp), yaml(opt), aux_with(kXent, {"opt_state.**"}));
    Context ctx;
    auto state = step.step(step.init(), blobs(16, 12), {.context_out = &ctx}).first;
    CHECK(ctx.opt_state.num_tensors() > 0);
    CHECK(ctx.opt_state.map([](const torch::Tensor& t) { return t.abs(); })
              .flatten()
              .back()
              .second.tensor()
              .sum()
              .item<float>() == 0);
    // The same model and data through a plain torch optimizer (which creates state lazily).
    torch::manual_seed(0);
    auto reference = make_model(kMlp);
    std::unique_ptr<torch::optim::Optimizer> torch_opt;
    if (opt.find("adam") != std::string::npos)
      torch_opt = std::make_unique<torch::optim::Adam>(reference->parameters(), torch::optim::AdamOptions(0.01));
    if (opt.find("sgd") != std::string::npos)
      torch_opt =
          std::make_unique<torch::optim::SGD>(reference->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    if (opt.find("rmsprop") != std::string::npos)
      torch_opt = std::make_unique<torch::optim::RMSprop>(
          reference->parameters(), torch::optim::RMSpropOptions(0.01).momentum(0.5).centered(true));
    const Tree batch = blobs(16, 12);
    for (int i = 0; i < 2; ++i) {
      torch_opt->zero_grad();
      const auto logits = reference->forward(Tree::dict({{"x", batch.get("image")}})).get("logits").tensor();
      torch::nn::functional::cross_entropy(logits, batch.get("label").tensor()).backward();
      torch_opt->step();
    }
    state = step.step(state, batch).first;
    INFO(opt);
    CHECK(trees_close(state.params, kd::params_tree(*reference), 1e-6));
  }
}

TEST_CASE("a deferred loss check (an accelerator's) reports the first non-finite step when read, not before") {
  const Tree good = Tree::dict({{"image", torch::rand({4, 8})}, {"target", torch::zeros({4, 3})}});
  const Tree bad = Tree::dict({{"image", torch::rand({4, 8})}, {"target", torch::full({4, 3}, std::nan(""))}});
  torch::manual_seed(0);
  TrainStep step(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.1}"),
                 aux_with("{type: L2, preds: preds.logits, targets: batch.target}"));
  step.set_nan_check(TrainStep::NanCheck::kDeferred);  // what kAuto does on CUDA
  auto state = step.init();
  state = step.step(state, good).first;
  step.check_deferred_non_finite();  // all finite so far: nothing
  state = step.step(state, good).first;
  state = step.step(state, bad).first;   // step 2: not finite, but not read yet
  state = step.step(state, good).first;  // runs on, as an accelerator's queue would
  CHECK(state.step == 4);
  CHECK_THROWS_WITH(step.check_deferred_non_finite(), Catch::StartsWith("non-finite loss at step 2 "));
  step.check_deferred_non_finite();  // reported once
  // On the CPU kAuto reads the loss every step, as before.
  torch::manual_seed(0);
  TrainStep cpu(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.1}"),
                aux_with("{type: L2, preds: preds.logits, targets: batch.target}"));
  CHECK_THROWS_WITH(cpu.step(cpu.init(), bad), Catch::StartsWith("non-finite loss at step 0"));
}

TEST_CASE("nan_policy raise names the step, the loss and the first bad gradient; skip_step leaves params alone") {
  const Tree batch = Tree::dict({{"image", torch::rand({4, 8})}, {"target", torch::full({4, 3}, std::nan(""))}});
  const std::string l2 = "{type: L2, preds: preds.logits, targets: batch.target}";
  auto run = [&](kd::train::NanPolicy policy) {
    torch::manual_seed(0);
    auto step = std::make_unique<TrainStep>(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.1}"), aux_with(l2));
    step->set_nan_policy(policy);
    return step;
  };
  auto raising = run(kd::train::NanPolicy::kRaise);
  CHECK_THROWS_WITH(raising->step(raising->init(), batch),
                    Catch::StartsWith("non-finite loss at step 0: losses/loss = nan; first non-finite gradient: "
                                      "grads.layers.0.weight"));
  auto skipping = run(kd::train::NanPolicy::kSkipStep);
  auto state = skipping->init();
  const Tree before = state.params.map([](const torch::Tensor& t) { return t.detach().clone(); });
  state = skipping->step(state, batch).first;
  CHECK(state.step == 1);
  CHECK(skipping->skipped_steps() == 1);
  CHECK(trees_close(state.params, before));
  auto ignoring = run(kd::train::NanPolicy::kIgnore);
  state = ignoring->step(ignoring->init(), batch).first;
  CHECK(torch::isnan(state.params.get("layers.2.weight").tensor()).any().item<bool>());
  CHECK(kd::train::parse_nan_policy(yaml("{}")) == kd::train::NanPolicy::kRaise);
  CHECK_THROWS_WITH(kd::train::parse_nan_policy(yaml("{nan_policy: skip}")),
                    Catch::Contains("raise, skip_step or ignore"));
}

TEST_CASE("freeze: the selected params get no gradient, no update and no optimizer state; the others train as usual") {
  torch::manual_seed(0);
  auto model = make_model(kMlp);
  auto reference = make_model(kMlp);
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < model->parameters().size(); ++i)
      reference->parameters()[i].copy_(model->parameters()[i]);
  }
  TrainStep step(model, yaml("{type: adam, learning_rate: 0.01, ema_decay: 0.9, freeze: ['params.layers.0.**']}"),
                 aux_with(kXent));
  TrainStep plain(reference, yaml("{type: adam, learning_rate: 0.01}"), aux_with(kXent));
  auto state = step.init();
  auto plain_state = plain.init();
  const Tree before = state.params.map([](const torch::Tensor& t) { return t.detach().clone(); });
  for (int i = 0; i < 3; ++i) {
    state = step.step(state, blobs(8, 20 + i)).first;
    plain_state = plain.step(plain_state, blobs(8, 20 + i)).first;
    // The reference's first layer must match for its second layer's gradients to be the same.
    torch::NoGradGuard no_grad;
    reference->parameters()[0].copy_(model->parameters()[0]);
    reference->parameters()[1].copy_(model->parameters()[1]);
  }
  for (const char* name : {"layers.0.weight", "layers.0.bias"}) {
    INFO(name);
    CHECK(state.params.get(name).tensor().equal(before.get(name).tensor()));
    CHECK(!state.params.get(name).tensor().requires_grad());
    CHECK(step.optimizer().ema_params().get(name).tensor().equal(before.get(name).tensor()));
  }
  for (const char* name : {"layers.2.weight", "layers.2.bias"}) {
    INFO(name);
    CHECK(!state.params.get(name).tensor().equal(before.get(name).tensor()));
    CHECK(torch::allclose(state.params.get(name).tensor(), plain_state.params.get(name).tensor(), 1e-6, 1e-6));
  }
  const auto& groups = step.optimizer().torch_optimizer().param_groups();
  REQUIRE(groups.size() == 1);
  CHECK(groups[0].params().size() == 2);
  const auto opt_state = state.opt_state.flatten();
  CHECK(!opt_state.empty());
  for (const auto& [path, leaf] : opt_state) CHECK(path.rfind("layers.2.", 0) == 0);

  CHECK_THROWS_WITH(TrainStep(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.5, freeze: ['params.layer.**']}"),
                              aux_with(kXent)),
                    Catch::Contains("freeze \"params.layer.**\"") && Catch::Contains("params.layers.**"));
  CHECK_THROWS_WITH(
      TrainStep(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.5, freeze: ['params.**']}"), aux_with(kXent)),
      Catch::Contains("freeze selects every parameter"));
}

TEST_CASE("param_groups: each group's params take its learning rate (a schedule) and weight decay") {
  torch::manual_seed(0);
  auto model = make_model(kMlp);
  TrainStep step(model,
                 yaml("{type: sgd, learning_rate: 0.1, weight_decay: 0.01, param_groups: [{name: head, select: "
                      "['params.layers.2.**'], weight_decay: 0.5, learning_rate: {type: Linear, init_value: 1.0, "
                      "end_value: 0.0, transition_steps: 10}}]}"),
                 aux_with(kXent, {"grads.**"}));
  auto state = step.init();
  for (int i = 0; i < 2; ++i) {
    const Tree before = state.params.map([](const torch::Tensor& t) { return t.detach().clone(); });
    Context ctx;
    const int64_t at = state.step;
    state = step.step(state, blobs(16, 30 + i), {.context_out = &ctx}).first;
    // Plain SGD: p' = p - lr * (g + wd * p), each group with its own lr and wd.
    const double head_lr = 1.0 - 0.1 * static_cast<double>(at);
    for (const auto& [name, lr, wd] : {std::tuple<const char*, double, double>{"layers.0.weight", 0.1, 0.01},
                                       {"layers.0.bias", 0.1, 0.01},
                                       {"layers.2.weight", head_lr, 0.5},
                                       {"layers.2.bias", head_lr, 0.5}}) {
      INFO(name << " at step " << at);
      const torch::Tensor p = before.get(name).tensor().to(torch::kDouble);
      const torch::Tensor g = ctx.get(std::string("grads.") + name).tensor().to(torch::kDouble);
      const torch::Tensor expected = p - lr * (g + wd * p);
      CHECK((state.params.get(name).tensor().to(torch::kDouble) - expected).abs().max().item<double>() <= 1e-6);
    }
  }
  const auto logged = step.optimizer().schedules(5);
  REQUIRE(logged.size() == 2);
  CHECK(logged[0] == std::pair<std::string, double>{"learning_rate", 0.1});
  CHECK(logged[1].first == "learning_rate/head");
  CHECK(logged[1].second == Approx(0.5));

  CHECK_THROWS_WITH(
      TrainStep(make_model(kMlp),
                yaml("{type: sgd, learning_rate: 0.1, param_groups: [{name: a, select: ['params.layers.**']}, "
                     "{name: b, select: ['params.layers.2.**']}]}"),
                aux_with(kXent)),
      Catch::Contains("selected by param groups \"a\" and \"b\""));
  CHECK_THROWS_WITH(
      TrainStep(make_model(kMlp), yaml("{type: sgd, learning_rate: 0.1, param_groups: [{learning_rate: 0.2}]}"),
                aux_with(kXent)),
      Catch::Contains("needs `select`"));
  CHECK_THROWS_WITH(TrainStep(make_model(kMlp),
                              yaml("{type: sgd, learning_rate: 0.1, freeze: ['params.layers.2.**'], param_groups: "
                                   "[{select: ['params.layers.2.**'], learning_rate: 0.2}]}"),
                              aux_with(kXent)),
                    Catch::Contains("selects no trained param"));
  CHECK_THROWS_WITH(TrainStep(make_model(kMlp),
                              yaml("{type: sgd, learning_rate: 0.1, param_groups: [{select: ['params.layers.2.**'], "
                                   "lr: 0.2}]}"),
                              aux_with(kXent)),
                    Catch::Contains("unknown key \"lr\""));
}
