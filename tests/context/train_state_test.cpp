#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "trainer/context/context.h"
#include "trainer/context/train_state.h"

using kd::Tree;
using kd::train::TrainState;

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl() {
    encoder = register_module(
        "encoder", torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Linear(8, 3)));
    norm = register_module("norm", torch::nn::BatchNorm1d(3));
  }
  torch::Tensor forward(torch::Tensor x) { return norm(encoder->forward(x)); }
  torch::nn::Sequential encoder{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
};
TORCH_MODULE(Net);

std::vector<std::string> state_paths(const Tree& t) {
  std::vector<std::string> out;
  for (const auto& [p, leaf] : t.flatten()) out.push_back(p);
  return out;
}

}  // namespace

TEST_CASE("a TrainState from a module nests its parameters and buffers by module path") {
  Net net;
  const TrainState state = TrainState::from_module(*net);
  CHECK(state.step == 0);
  CHECK(state_paths(state.params) == std::vector<std::string>{"encoder.0.weight", "encoder.0.bias", "encoder.2.weight",
                                                              "encoder.2.bias", "norm.weight", "norm.bias"});
  CHECK(state_paths(state.collections) ==
        std::vector<std::string>{"norm.running_mean", "norm.running_var", "norm.num_batches_tracked"});
  CHECK(state.params.get("encoder.2.weight").tensor().sizes() == torch::IntArrayRef({3, 8}));
  CHECK(state.opt_state.empty());
}

TEST_CASE("the TrainState shares storage with the module") {
  Net net;
  const TrainState state = TrainState::from_module(*net);
  torch::NoGradGuard no_grad;
  net->encoder[0]->as<torch::nn::Linear>()->bias.fill_(3.0);
  CHECK(state.params.get("encoder.0.bias").tensor().eq(3.0).all().item<bool>());
  net->train();
  net->forward(torch::randn({5, 4}));  // updates the BatchNorm running statistics in place
  CHECK(state.collections.get("norm.num_batches_tracked").tensor().item<int64_t>() == 1);
}

TEST_CASE("the TrainState holds the optimizer's per-parameter state after a step") {
  Net net;
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  CHECK(TrainState::from_module(*net, &adam).opt_state.empty());
  adam.zero_grad();
  net->forward(torch::randn({5, 4})).pow(2).mean().backward();
  adam.step();
  const TrainState state = TrainState::from_module(*net, &adam, /*step=*/1);
  CHECK(state.step == 1);
  CHECK(state_paths(state.opt_state.get("encoder.0.weight")) ==
        std::vector<std::string>{"step", "exp_avg", "exp_avg_sq"});
  CHECK(state.opt_state.get("encoder.0.weight.step").to_int() == 1);
  // After one Adam step, exp_avg = (1 - beta1) * grad.
  const torch::Tensor grad = net->encoder[0]->as<torch::nn::Linear>()->weight.grad();
  CHECK(torch::allclose(state.opt_state.get("encoder.0.weight.exp_avg").tensor(), 0.1 * grad));
  CHECK(state.opt_state.flatten().size() == 6 * 3);
  const auto ctx = kd::train::Context::from_state_and_batch(state, Tree::dict());
  CHECK(ctx.get("opt_state.norm.bias.exp_avg_sq").tensor().sizes() == torch::IntArrayRef({3}));
}

TEST_CASE("SGD momentum buffers appear under their parameter") {
  torch::nn::Linear lin(2, 1);
  torch::optim::SGD sgd(lin->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  lin->forward(torch::ones({1, 2})).sum().backward();
  sgd.step();
  const TrainState state = TrainState::from_module(*lin, &sgd);
  CHECK(state_paths(state.opt_state) == std::vector<std::string>{"weight.momentum_buffer", "bias.momentum_buffer"});
  CHECK(state.opt_state.get("bias.momentum_buffer").tensor().item<float>() == 1.0f);
}
