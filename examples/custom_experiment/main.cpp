// A user program that links the kd library, registers its own model, loss and callback, and has
// every kd command with them (kd::cli::run). CMakeLists.txt builds it in kd's tree or against an
// installed kd.
//
//   build/examples/custom_experiment/kd_custom_example train --cfg=examples/custom_experiment/experiment.yaml
//   build/examples/custom_experiment/kd_custom_example configs ResidualMlp
#include <iostream>

#include <torch/torch.h>

#include "trainer/kd.h"

namespace {

// A residual MLP: the model reads `x` by path and records its hidden features in interms.
class ResidualMlp : public kd::models::Model {
 public:
  explicit ResidualMlp(const kd::config::Node& o) : Model(o, {{"x", "batch.image"}}) {
    const int64_t in = o.get_int("input_size"), width = o.get_int("width", 64), out = o.get_int("output_size");
    embed_ = register_module("embed", torch::nn::Linear(in, width));
    block_ = register_module("block", torch::nn::Linear(width, width));
    head_ = register_module("head", torch::nn::Linear(width, out));
  }

  kd::Tree forward(const kd::Tree& inputs) override {
    torch::Tensor x = inputs.at("x").tensor().flatten(1).to(torch::kFloat);
    torch::Tensor h = torch::relu(embed_(x));
    h = h + torch::relu(block_(h));
    sow("features", h);  // interms.features, recorded only when something reads interms
    return kd::Tree::dict({{"logits", head_(h)}});
  }

 private:
  torch::nn::Linear embed_{nullptr}, block_{nullptr}, head_{nullptr};
};

// A loss: the base class handles `weight`, `mask` and `normalize_by`; this holds the math.
class LogitNormPenalty : public kd::losses::Loss {
 public:
  explicit LogitNormPenalty(const kd::config::Node& o) : Loss(o), logits_(key(o, "logits", "preds.logits")) {}
  torch::Tensor values(const kd::train::Context& ctx) const override { return read(ctx, logits_).pow(2).sum(-1); }

 private:
  kd::Path logits_;
};

// A callback: prints the test accuracy after every eval.
class PrintEval : public kd::train::Callback {
 public:
  explicit PrintEval(const kd::config::Node& o) : prefix_(o.get_string("prefix", "eval")) {}
  void on_eval_end(kd::train::Trainer&, const std::string& name, int64_t step,
                   const kd::writers::Scalars& values) override {
    for (const auto& [k, v] : values) {
      if (k == "metrics/accuracy")
        std::cout << prefix_ << " " << name << " step " << step << ": accuracy " << v << "\n";
    }
  }

 private:
  std::string prefix_;
};

}  // namespace

int main(int argc, char** argv) {
  kd::models::registry().add<ResidualMlp>("ResidualMlp", "input_size, width=64, output_size");
  kd::losses::registry().add<LogitNormPenalty>("LogitNormPenalty");
  kd::train::callback_registry().add<PrintEval>("PrintEval");

  // Every kd command (train, eval, export, inspect, configs, launch, report), with the components above.
  return kd::cli::run(argc, argv, {.name = "kd_custom_example"});
}
