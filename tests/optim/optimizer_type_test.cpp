#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/optim/optimizer.h"
#include "trainer/optim/optimizer_state.h"
#include "trainer/optim/optimizer_type.h"

using kd::config::Node;

namespace {

// The gradient of step t for a parameter of `shape`: fixed values far from zero, so that a sign
// never depends on rounding.
torch::Tensor gradient(const std::vector<int64_t>& shape, int t, double offset) {
  const int64_t n = shape.size() == 1 ? shape[0] : shape[0] * shape[1];
  torch::Tensor g = torch::empty({n}, torch::kDouble);
  for (int64_t i = 0; i < n; ++i) g[i] = (i % 2 ? -1.0 : 1.0) * (0.5 + 0.1 * static_cast<double>(i) + offset * t);
  return g.reshape(shape);
}

struct Run {
  std::vector<torch::Tensor> initial;  // double copies of the params before training
  std::vector<torch::Tensor> final;
  std::vector<std::vector<torch::Tensor>> grads;  // [step][param], double
};

// Three updates of `yaml`'s optimizer on a Linear(3, 2) with the gradients above.
Run three_steps(const std::string& yaml, double offset = 0.25) {
  torch::manual_seed(0);
  torch::nn::Linear model(3, 2);
  kd::optim::Optimizer optimizer(Node::parse(yaml), *model);
  Run run;
  for (const auto& p : model->parameters()) run.initial.push_back(p.detach().to(torch::kDouble).clone());
  for (int t = 0; t < 3; ++t) {
    std::vector<torch::Tensor> step_grads;
    for (auto& p : model->parameters()) {
      const torch::Tensor g = gradient(p.sizes().vec(), t, offset);
      p.mutable_grad() = g.to(torch::kFloat);
      step_grads.push_back(g);
    }
    run.grads.push_back(step_grads);
    optimizer.apply(t);
  }
  for (const auto& p : model->parameters()) run.final.push_back(p.detach().to(torch::kDouble));
  return run;
}

double max_relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got - want).abs() / (want.abs() + 1e-3)).max().item<double>();
}

}  // namespace

TEST_CASE("lion follows optax.lion's formulas") {
  const double lr = 0.01, b1 = 0.9, b2 = 0.99, wd = 0.1;
  const Run run = three_steps("{type: lion, learning_rate: 0.01, weight_decay: 0.1}");
  for (std::size_t i = 0; i < run.initial.size(); ++i) {
    torch::Tensor p = run.initial[i].clone(), mu = torch::zeros_like(p);
    for (int t = 0; t < 3; ++t) {
      const torch::Tensor& g = run.grads[static_cast<std::size_t>(t)][i];
      const torch::Tensor direction = torch::sign(b1 * mu + (1 - b1) * g);
      mu = b2 * mu + (1 - b2) * g;
      p = p - lr * (direction + wd * p);
    }
    INFO("param " << i);
    // Float32 arithmetic against double: a few roundings of values below 1.
    CHECK(max_relative_error(run.final[i], p) < 1e-5);
    CHECK(!run.final[i].equal(run.initial[i]));
  }
}

TEST_CASE("lamb follows optax.lamb's formulas: Adam's direction, weight decay, the trust ratio") {
  const double lr = 0.05, b1 = 0.9, b2 = 0.999, eps = 1e-6, wd = 0.01;
  const Run run = three_steps("{type: lamb, learning_rate: 0.05, weight_decay: 0.01}");
  for (std::size_t i = 0; i < run.initial.size(); ++i) {
    torch::Tensor p = run.initial[i].clone(), mu = torch::zeros_like(p), nu = torch::zeros_like(p);
    for (int t = 1; t <= 3; ++t) {
      const torch::Tensor& g = run.grads[static_cast<std::size_t>(t - 1)][i];
      mu = b1 * mu + (1 - b1) * g;
      nu = b2 * nu + (1 - b2) * g * g;
      const torch::Tensor mu_hat = mu / (1 - std::pow(b1, t)), nu_hat = nu / (1 - std::pow(b2, t));
      torch::Tensor u = mu_hat / (torch::sqrt(nu_hat) + eps) + wd * p;
      const double trust = p.norm().item<double>() / u.norm().item<double>();
      p = p - lr * trust * u;
    }
    INFO("param " << i);
    CHECK(max_relative_error(run.final[i], p) < 1e-5);
  }
}

TEST_CASE("a user's own optimizer type is registered, built from YAML, and its state read and restored") {
  static bool registered = false;
  if (!registered) {
    // Sign descent with a running count: p <- p - lr sign(g); seen <- seen + 1.
    class SignDescent final : public kd::optim::OptimizerType {
     public:
      explicit SignDescent(const Node& o) : scale_(o.get_double("scale", 1.0)) {}
      std::unique_ptr<torch::optim::OptimizerOptions> options() const override {
        auto h = std::make_unique<kd::optim::HyperParams>();
        h->values["scale"] = scale_;
        return h;
      }
      std::unique_ptr<torch::optim::Optimizer> create(
          std::vector<torch::optim::OptimizerParamGroup> groups) const override {
        return std::make_unique<kd::optim::PerParameterOptimizer>(
            "test_sign", std::move(groups), options(), std::vector<std::string>{"seen"},
            [](torch::Tensor& p, const torch::Tensor& g, kd::optim::NamedParamState& s,
               const kd::optim::HyperParams& h) {
              p.add_(g.sign(), -h.lr * h.at("scale"));
              s.get("seen").add_(1);
            });
      }

     private:
      double scale_;
    };
    kd::optim::optimizer_registry().add<SignDescent>("test_sign", "scale = 1");
    registered = true;
  }
  const Run run = three_steps("{type: test_sign, learning_rate: 0.1, scale: 0.5}");
  for (std::size_t i = 0; i < run.initial.size(); ++i) {
    torch::Tensor expected = run.initial[i].clone();
    for (int t = 0; t < 3; ++t) expected -= 0.05 * torch::sign(run.grads[static_cast<std::size_t>(t)][i]);
    CHECK(max_relative_error(run.final[i], expected) < 1e-6);
  }
  // Its state is a tree like the built-ins' (a checkpoint's opt_state), and loads back.
  torch::manual_seed(0);
  torch::nn::Linear model(3, 2);
  kd::optim::Optimizer optimizer(Node::parse("{type: test_sign, learning_rate: 0.1}"), *model);
  for (auto& p : model->parameters()) p.mutable_grad() = torch::ones_like(p);
  optimizer.apply(0);
  const kd::Tree state = kd::optim::optimizer_state_tree(optimizer.torch_optimizer(), *model);
  CHECK(state.get("weight.step").to_int() == 1);
  CHECK(state.get("weight.seen").tensor().equal(torch::ones({2, 3})));
  torch::nn::Linear other(3, 2);
  kd::optim::Optimizer restored(Node::parse("{type: test_sign, learning_rate: 0.1}"), *other);
  kd::optim::load_optimizer_state(restored.torch_optimizer(), *other, state);
  const kd::Tree back = kd::optim::optimizer_state_tree(restored.torch_optimizer(), *other);
  CHECK(back.get("bias.step").to_int() == 1);
  CHECK(back.get("bias.seen").tensor().equal(torch::ones({2})));
  // A state without the type's tensors is refused.
  CHECK_THROWS_WITH(kd::optim::load_optimizer_state(restored.torch_optimizer(), *other,
                                                    kd::Tree::dict({{"weight", kd::Tree::dict({{"step", 1}})}})),
                    Catch::Contains("lacks seen"));
  // The refused load left no state: the next update starts each parameter's afresh.
  for (auto& p : other->parameters()) p.mutable_grad() = torch::ones_like(p);
  restored.apply(1);
  const kd::Tree fresh = kd::optim::optimizer_state_tree(restored.torch_optimizer(), *other);
  CHECK(fresh.get("weight.step").to_int() == 1);
  CHECK(fresh.get("weight.seen").tensor().equal(torch::ones({2, 3})));
}

TEST_CASE("an unknown optimizer type names the nearest registered ones") {
  torch::nn::Linear model(3, 2);
  CHECK_THROWS_WITH(kd::optim::Optimizer(Node::parse("{type: lian, learning_rate: 0.1}"), *model),
                    Catch::Contains("unknown optimizer type \"lian\"") && Catch::Contains("lion"));
  CHECK_THROWS_WITH(kd::optim::Optimizer(Node::parse("{type: lion, learning_rate: 0.1, b3: 2}"), *model),
                    Catch::Contains("unknown key \"b3\""));
  CHECK_THROWS_WITH(kd::optim::Optimizer(Node::parse("{type: lamb, learning_rate: 0.1, b1: 1.0}"), *model),
                    Catch::Contains("below 1"));
}
