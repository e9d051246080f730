// kd::optim::OptimizerType: what `optimizer.type` names, registered like models and losses.
// A type is built from the optimizer's YAML map (reading its own keys: b1, momentum, ...; the
// keys every optimizer has, learning_rate, freeze, param_groups, clip_global_norm, ... are
// kd::optim::Optimizer's) and makes the torch optimizer of the run's param groups.
//
// Built in: sgd, adam, adamw, rmsprop, adagrad (torch.optim's), lion and lamb (optax's).
//
// A user's own optimizer, written once as its per-parameter update (its state is checkpointed
// and resumed like the built-ins'):
//
//   class Sign : public kd::optim::OptimizerType {
//    public:
//     explicit Sign(const kd::config::Node& o) : weight_decay_(o.get_double("weight_decay", 0.0)) {}
//     std::unique_ptr<torch::optim::OptimizerOptions> options() const override {
//       return std::make_unique<kd::optim::HyperParams>(HyperParams{.weight_decay = weight_decay_});
//     }
//     std::unique_ptr<torch::optim::Optimizer> create(std::vector<torch::optim::OptimizerParamGroup> groups)
//         const override {
//       return std::make_unique<kd::optim::PerParameterOptimizer>("sign", std::move(groups), options(),
//           std::vector<std::string>{},   // the names of its per-parameter state tensors
//           [](torch::Tensor& p, const torch::Tensor& g, kd::optim::NamedParamState&,
//              const kd::optim::HyperParams& h) { p.add_(g.sign(), -h.lr); });
//     }
//    private:
//     double weight_decay_;
//   };
//   kd::optim::optimizer_registry().add<Sign>("sign");
//   # YAML:  optimizer: {type: sign, learning_rate: 1e-3}
//
// Any other torch::optim::Optimizer may be returned too; its state is then not checkpointed
// (saving raises kd::NotSupportedError).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/optim/optimizer.h>

#include "trainer/config/node.h"
#include "trainer/config/registry.h"

namespace kd::optim {

class OptimizerType {
 public:
  virtual ~OptimizerType() = default;
  // The torch options of one param group; the caller sets its learning rate and, for a param
  // group of its own or weight_decay_exclude, its weight decay (set_weight_decay).
  virtual std::unique_ptr<torch::optim::OptimizerOptions> options() const = 0;
  virtual void set_weight_decay(torch::optim::OptimizerOptions& options, double weight_decay) const;
  virtual std::unique_ptr<torch::optim::Optimizer> create(
      std::vector<torch::optim::OptimizerParamGroup> groups) const = 0;
};

config::Registry<OptimizerType>& optimizer_registry();

// The options of a PerParameterOptimizer's group: the learning rate, the weight decay, and
// named numbers of the type's own.
struct HyperParams : public torch::optim::OptimizerCloneableOptions<HyperParams> {
  double lr = 1e-3;
  double weight_decay = 0;
  std::map<std::string, double> values;
  double get_lr() const override { return lr; }
  void set_lr(const double value) override { lr = value; }
  double at(const std::string& name) const;  // values.at(name), kd::Error naming it
};

// A parameter's state: the number of updates and named tensors (shaped like the parameter).
struct NamedParamState : public torch::optim::OptimizerCloneableParamState<NamedParamState> {
  int64_t step = 0;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  torch::Tensor& get(const std::string& name);  // kd::Error when it has none of that name
};

// An optimizer given by its per-parameter update. step(): for every parameter with a
// gradient, under no_grad, ++state.step, then update(param, grad, state, its group's options).
// Every parameter's state is created at construction (zero tensors named `state_names`, step
// 0), so opt_state reads from step 0 on.
class PerParameterOptimizer : public torch::optim::Optimizer {
 public:
  using Update = std::function<void(torch::Tensor& param, const torch::Tensor& grad, NamedParamState& state,
                                    const HyperParams& options)>;
  PerParameterOptimizer(std::string name, std::vector<torch::optim::OptimizerParamGroup> groups,
                        std::unique_ptr<torch::optim::OptimizerOptions> defaults, std::vector<std::string> state_names,
                        Update update);

  torch::Tensor step(LossClosure closure = nullptr) override;
  // torch's own archive format is not used (kd's checkpoints read opt_state).
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  const std::string& name() const { return name_; }
  const std::vector<std::string>& state_names() const { return state_names_; }

 private:
  std::unique_ptr<NamedParamState> fresh_state(const torch::Tensor& param) const;

  std::string name_;
  std::vector<std::string> state_names_;
  Update update_;
};

}  // namespace kd::optim
