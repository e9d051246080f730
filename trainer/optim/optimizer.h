// kd::optim::Optimizer: a torch::optim optimizer plus what a training run needs around it,
// all configured from the experiment's `optimizer:` map:
//
//   optimizer:
//     type: adamw                 # sgd | adam | adamw | rmsprop | adagrad | lion | lamb, or one
//                                 # registered (optimizer_type.h)
//     learning_rate: {type: WarmupCosineDecay, peak_value: 1e-3, warmup_steps: 100,
//                     decay_steps: 5000}     # or a number
//     weight_decay: 1e-4
//     weight_decay_exclude: ["params.**.bias"]   # path globs that get no decay
//     freeze: ["params.encoder.**"]   # path globs of parameters that are not trained: no
//                                     # gradient (requires_grad off), no update, no state
//     param_groups:                   # params with their own learning rate / weight decay
//       - {select: ["params.head.**"], learning_rate: 1e-2, weight_decay: 0, name: head}
//                                     # (a number or a schedule, logged as
//                                     # schedules/learning_rate/<name>; a param is in one group)
//     clip_global_norm: 1.0      # optional
//     accumulate_steps: 4        # optional: one update per 4 micro-batches of each batch
//     ema_decay: 0.999           # optional: keep an exponential moving average of params
//
// Other keys are the torch optimizer's own options: b1, b2, eps, amsgrad (adam, adamw);
// momentum, nesterov, dampening (sgd); alpha, centered, momentum (rmsprop); lr_decay,
// initial_accumulator_value (adagrad).
//
// Adam and AdamW on float32 CPU parameters take kd's fused step (fused_adam.h: one pass over each
// parameter, torch's state and options); every other case takes the torch optimizer's own step.
#pragma once

#include "trainer/common/torch_fwd.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "trainer/config/node.h"
#include "trainer/optim/schedules.h"
#include "trainer/tree/tree.h"

namespace torch::optim {
class OptimizerParamGroup;
}  // namespace torch::optim

namespace kd::optim {

class OptimizerType;

class Optimizer {
 public:
  // The `optimizer:` section as read and checked; the type's own keys (betas, momentum, ...) are
  // its OptimizerType's, which `kind` holds.
  struct Options {
    struct ParamGroup {
      std::string name;
      std::set<std::string> selected;      // "params.<name>" its `select` globs match
      SchedulePtr learning_rate;           // null: the optimizer's
      std::optional<double> weight_decay;  // none: the optimizer's
    };
    std::string type;
    std::shared_ptr<OptimizerType> kind;  // optimizer_registry()'s, built from the section
    SchedulePtr learning_rate;
    double clip_global_norm = 0;  // 0: off
    int64_t accumulate_steps = 1;
    double ema_decay = 0;                        // 0: off
    std::set<std::string> weight_decay_exclude;  // "params.<name>" its globs match
    std::set<std::string> freeze;                // "params.<name>" its globs match
    std::vector<ParamGroup> param_groups;
    std::string freeze_where, param_groups_where;  // "file:line: key", for errors found later

    // The globs are matched against `model`'s parameters. Throws kd::ConfigError naming the key.
    static Options from_config(const config::Node& node, const torch::nn::Module& model);
  };

  // REQUIRES: `model` outlives this object.
  Optimizer(const config::Node& options, torch::nn::Module& model);
  Optimizer(Options options, torch::nn::Module& model);
  ~Optimizer();

  // One update from the gradients held in the parameters' .grad: sets the learning rate for
  // `step`, clips by global norm when configured, steps the torch optimizer, updates the EMA.
  void apply(int64_t step);

  double learning_rate(int64_t step) const { return (*learning_rate_)(step); }
  // The schedules evaluated at `step`, reported as "schedules/<name>" (param groups' own learning
  // rates as "learning_rate/<group name>").
  std::vector<std::pair<std::string, double>> schedules(int64_t step) const;

  int64_t accumulate_steps() const { return accumulate_steps_; }
  bool has_ema() const { return ema_decay_ > 0; }
  // The EMA of the params (a tree like TrainState::params); empty without `ema_decay`.
  const Tree& ema_params() const { return ema_params_; }

  // While it lives, the model's parameters hold the EMA (Kauldron's UseEmaParams): each
  // parameter takes the EMA's storage (set_data, no copy) and gets its own back when the guard
  // ends. For evaluation only: nothing may update the parameters meanwhile. REQUIRES has_ema().
  class EmaParamsGuard {
   public:
    explicit EmaParamsGuard(Optimizer& optimizer);
    ~EmaParamsGuard();
    EmaParamsGuard(const EmaParamsGuard&) = delete;
    EmaParamsGuard& operator=(const EmaParamsGuard&) = delete;

   private:
    Optimizer& optimizer_;
    std::vector<torch::Tensor> own_;  // each parameter's own data
  };

  // Every parameter's gradient to none (PyTorch 2's zero_grad(set_to_none=True), on every
  // LibTorch): the next backward hands its gradient tensors over instead of adding them to
  // zeros, and a parameter that then gets no gradient is left alone by the update.
  void clear_gradients();

  torch::optim::Optimizer& torch_optimizer() { return *optimizer_; }
  const torch::optim::Optimizer& torch_optimizer() const { return *optimizer_; }
  const std::string& type() const { return type_; }

 private:
  void update_ema();
  // The torch param groups of `o` over the model's parameters (params_ and frozen_ filled on the
  // way): each group's params, weight decay and learning rate; the params of no param group in
  // the first one or two (weight_decay_exclude: decay 0).
  std::vector<torch::optim::OptimizerParamGroup> make_param_groups(const Options& o);

  torch::nn::Module& model_;
  std::string type_;
  std::shared_ptr<OptimizerType> kind_;  // optimizer_registry()'s, for `type`
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  SchedulePtr learning_rate_;
  double clip_global_norm_ = 0;  // 0: off
  int64_t accumulate_steps_ = 1;
  double ema_decay_ = 0;  // 0: off
  Tree ema_params_;
  std::vector<torch::Tensor> ema_tensors_;         // the leaves of ema_params_, in params_' order
  std::vector<torch::Tensor> params_;              // in model order, for clipping and EMA
  std::vector<bool> frozen_;                       // per params_ entry: selected by `freeze`
  std::vector<SchedulePtr> group_learning_rates_;  // per torch param group
  std::vector<std::pair<std::string, SchedulePtr>> named_group_learning_rates_;  // param_groups' own
};

}  // namespace kd::optim
