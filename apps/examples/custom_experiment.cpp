// A user program that links the kd library, registers its own model, loss and callback, and
// runs an experiment that uses them by name. Build target: kd_custom_example.
//
//   build/apps/kd_custom_example --cfg=apps/examples/custom_experiment.yaml [--cfg.k=v ...]
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

  std::string cfg;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a.rfind("--cfg=", 0) == 0) cfg = a.substr(6);
  }
  if (cfg.empty()) {
    std::cerr << "usage: kd_custom_example --cfg=FILE [--cfg.key=value ...]\n";
    return 2;
  }
  try {
    kd::train::Trainer trainer(kd::config::load_experiment(cfg, kd::config::parse_overrides(args, nullptr)));
    trainer.train();
  } catch (const kd::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
