// kd::models::Model: a torch::nn::Module whose inputs are path keys into the Context and whose
// output is a tree (`preds`). Intermediate values can be recorded into `interms`:
//
//   class MyModel : public kd::models::Model {
//    public:
//     explicit MyModel(const kd::config::Node& o) : Model(o, {{"x", "batch.image"}}) {
//       fc = register_module("fc", torch::nn::Linear(784, 10));
//     }
//     kd::Tree forward(const kd::Tree& inputs) override {
//       auto h = inputs.at("x").tensor().flatten(1);
//       sow("features", h);                       // -> interms.features (when recording)
//       return kd::Tree::dict({{"logits", fc(h)}});
//     }
//     torch::nn::Linear fc{nullptr};
//   };
//
// YAML: `model: {type: MyModel, inputs: {x: batch.image}}` overrides the default input paths.
// Recording is switched on by the step only when some auxiliary reads `interms`, so `sow`
// costs one branch otherwise.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "trainer/config/node.h"
#include "trainer/config/registry.h"
#include "trainer/tree/tree.h"

namespace torch::nn {
class SequentialImpl;
}

namespace kd::models {

// The largest layer size a YAML may ask for: beyond it a single layer would not fit in memory
// (2^24 x 2^24 float32 weights are 1 PiB), and LibTorch's own checks would speak of tensors
// instead of the key.
inline constexpr int64_t kMaxSize = int64_t{1} << 24;

class Model : public torch::nn::Module {
 public:
  // Reads `inputs` (argument name -> path) from options; `default_inputs` are used for the
  // arguments the YAML does not name.
  Model(const config::Node& options, std::vector<std::pair<std::string, std::string>> default_inputs);

  // `inputs` is a dict: argument name -> the tree at its path in the context.
  virtual Tree forward(const Tree& inputs) = 0;

  const std::vector<std::pair<std::string, Path>>& input_keys() const { return input_keys_; }

  // Tensors this model holds once that a PyTorch module holds under two names (tied weights):
  // {other name, the name here}, e.g. GPT's {"lm_head.weight", "transformer.wte.weight"}.
  // init_transform accepts a file that holds either name, or both when they are equal.
  virtual std::vector<std::pair<std::string, std::string>> tied_weights() const { return {}; }

 protected:
  // Records `value` as interms.<this module's path>.<name> when recording is on.
  void sow(const std::string& name, const torch::Tensor& value) const;
  // Runs each child of `seq` in turn, recording every child's output as
  // interms.<child path>.output when recording is on.
  torch::Tensor run_recorded(torch::nn::SequentialImpl& seq, torch::Tensor x) const;

 private:
  std::vector<std::pair<std::string, Path>> input_keys_;
};

using ModelPtr = std::shared_ptr<Model>;

// Records interms during one forward pass. While an IntermsRecorder is alive on a thread,
// Model::sow on that thread writes into it.
class IntermsRecorder {
 public:
  // Module paths are computed once per recorder from `root.named_modules()`.
  explicit IntermsRecorder(const torch::nn::Module& root);
  ~IntermsRecorder();
  IntermsRecorder(const IntermsRecorder&) = delete;
  IntermsRecorder& operator=(const IntermsRecorder&) = delete;

  void record(const torch::nn::Module* module, const std::string& name, const torch::Tensor& value);
  // The recorded tree; recording goes on until the recorder is destroyed.
  const Tree& interms() const { return interms_; }
  void clear() { interms_ = Tree::dict(); }

  static IntermsRecorder* current();

 private:
  std::vector<std::pair<const torch::nn::Module*, Path>> paths_;
  Tree interms_ = Tree::dict();
  IntermsRecorder* previous_;
};

// MLP, CNN, ResNet, ViT, Transformer, GPT, TorchScript.
config::Registry<Model>& registry();

}  // namespace kd::models
