// MLP: flatten the input, then Linear + activation (+ dropout) per hidden size, then a Linear
// to output_size.
//   model: {type: MLP, input_size: 784, hidden_sizes: [512, 256], output_size: 10, activation: relu,
//           dropout: 0.0, inputs: {x: batch.image}, output_key: logits}
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include "trainer/common/error.h"
#include "trainer/models/builtins_internal.h"

namespace kd::models {
namespace {

torch::nn::AnyModule activation(const std::string& name, const config::Node& o) {
  if (name == "relu") return torch::nn::AnyModule(torch::nn::ReLU());
  if (name == "gelu") return torch::nn::AnyModule(torch::nn::GELU());
  if (name == "tanh") return torch::nn::AnyModule(torch::nn::Tanh());
  if (name == "sigmoid") return torch::nn::AnyModule(torch::nn::Sigmoid());
  if (name == "silu") return torch::nn::AnyModule(torch::nn::SiLU());
  throw ConfigError(o.where() + ": unknown activation \"" + name + "\" (known: relu, gelu, tanh, sigmoid, silu)");
}

class Mlp : public Model {
 public:
  explicit Mlp(const config::Node& o)
      : Model(o, {{"x", "batch.image"}}), output_key_(o.get_string("output_key", "logits")) {
    const auto hidden = o.get_int_list_in("hidden_sizes", std::vector<int64_t>{}, 1, kMaxSize);
    const int64_t output_size = o.get_int_in("output_size", std::nullopt, 1, kMaxSize);
    const std::string act = o.get_string("activation", "relu");
    const double dropout = o.get_double_in("dropout", 0.0, 0, 1);
    int64_t in = o.get_int_in("input_size", std::nullopt, 1, kMaxSize);  // the flattened size of one input, e.g. 784
    layers_ = register_module("layers", torch::nn::Sequential());
    for (int64_t h : hidden) {
      layers_->push_back(torch::nn::Linear(in, h));
      layers_->push_back(activation(act, o));
      if (dropout > 0) layers_->push_back(torch::nn::Dropout(dropout));
      in = h;
    }
    layers_->push_back(torch::nn::Linear(in, output_size));
  }

  Tree forward(const Tree& inputs) override {
    torch::Tensor x = inputs.at("x").tensor();
    x = x.reshape({x.size(0), -1});
    if (!x.is_floating_point()) x = x.to(torch::kFloat);
    return Tree::dict({{output_key_, run_recorded(*layers_, x)}});
  }

 private:
  std::string output_key_;
  torch::nn::Sequential layers_{nullptr};
};

}  // namespace

void detail::register_mlp(config::Registry<Model>& r) {
  r.add(
      "MLP", [](const config::Node& o) { return std::make_shared<Mlp>(o); },
      "input_size, hidden_sizes=[], output_size, activation=relu, dropout=0, output_key=logits, inputs={x: "
      "batch.image}");
}

}  // namespace kd::models
