// PerParameterOptimizer, and optax's Lion and LAMB written on it, with optax's formulas and
// defaults (torch.optim has neither).
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/compat/torch_compat.h"
#include "trainer/optim/optimizer_type.h"
#include "trainer/optim/optimizer_types_internal.h"

namespace kd::optim {

void OptimizerType::set_weight_decay(torch::optim::OptimizerOptions& options, double weight_decay) const {
  auto* h = dynamic_cast<HyperParams*>(&options);
  if (h == nullptr) throw NotSupportedError("this optimizer type does not say how to set its weight decay");
  h->weight_decay = weight_decay;
}

double HyperParams::at(const std::string& name) const {
  const auto it = values.find(name);
  if (it == values.end()) throw Error("the optimizer's options have no \"" + name + "\"");
  return it->second;
}

torch::Tensor& NamedParamState::get(const std::string& name) {
  for (auto& [n, t] : tensors) {
    if (n == name) return t;
  }
  throw Error("the optimizer state has no \"" + name + "\"");
}

PerParameterOptimizer::PerParameterOptimizer(std::string name, std::vector<torch::optim::OptimizerParamGroup> groups,
                                             std::unique_ptr<torch::optim::OptimizerOptions> defaults,
                                             std::vector<std::string> state_names, Update update)
    : torch::optim::Optimizer(std::move(groups), std::move(defaults)),
      name_(std::move(name)),
      state_names_(std::move(state_names)),
      update_(std::move(update)) {
  for (const auto& group : param_groups()) {
    if (dynamic_cast<const HyperParams*>(&group.options()) == nullptr) {
      throw Error("optimizer " + name_ + ": a PerParameterOptimizer's groups take kd::optim::HyperParams");
    }
    for (const auto& p : group.params()) state_[compat::optimizer_state_key<decltype(state_)>(p)] = fresh_state(p);
  }
}

std::unique_ptr<NamedParamState> PerParameterOptimizer::fresh_state(const torch::Tensor& param) const {
  auto state = std::make_unique<NamedParamState>();
  for (const auto& n : state_names_) state->tensors.emplace_back(n, torch::zeros_like(param));
  return state;
}

torch::Tensor PerParameterOptimizer::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups()) {
    const auto& options = static_cast<const HyperParams&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = state_[compat::optimizer_state_key<decltype(state_)>(p)];
      if (!slot) slot = fresh_state(p);  // e.g. a loaded state that had none for this parameter
      auto& state = static_cast<NamedParamState&>(*slot);
      ++state.step;
      update_(p, p.grad(), state, options);
    }
  }
  return loss;
}

void PerParameterOptimizer::save(torch::serialize::OutputArchive&) const {
  throw NotSupportedError("optimizer " + name_ + " is saved in kd's checkpoints, not torch archives");
}

void PerParameterOptimizer::load(torch::serialize::InputArchive&) {
  throw NotSupportedError("optimizer " + name_ + " is loaded from kd's checkpoints, not torch archives");
}

namespace {

using detail::kInf;

using detail::beta;

// optax.lion: u = sign(b1 m + (1 - b1) g); m <- b2 m + (1 - b2) g; p <- p - lr (u + wd p).
// optax's defaults: b1 0.9, b2 0.99, weight_decay 1e-3.
class Lion final : public OptimizerType {
 public:
  explicit Lion(const config::Node& o) : b1_(beta(o, "b1", 0.9)), b2_(beta(o, "b2", 0.99)) {
    prototype_.weight_decay = o.get_double_in("weight_decay", 1e-3, 0, kInf);
  }
  std::unique_ptr<torch::optim::OptimizerOptions> options() const override {
    return std::make_unique<HyperParams>(prototype_);
  }
  std::unique_ptr<torch::optim::Optimizer> create(
      std::vector<torch::optim::OptimizerParamGroup> groups) const override {
    // The betas are the type's, the same for every group; lr and weight_decay are the group's.
    return std::make_unique<PerParameterOptimizer>(
        "lion", std::move(groups), options(), std::vector<std::string>{"mu"},
        [b1 = b1_, b2 = b2_](torch::Tensor& p, const torch::Tensor& g, NamedParamState& s, const HyperParams& h) {
          torch::Tensor& mu = s.get("mu");
          torch::Tensor direction = (mu * b1).add_(g, 1 - b1).sign_();
          if (h.weight_decay != 0) direction.add_(p, h.weight_decay);
          mu.mul_(b2).add_(g, 1 - b2);
          p.add_(direction, -h.lr);
        });
  }

 private:
  double b1_, b2_;
  HyperParams prototype_;
};

// optax.lamb: Adam's bias-corrected direction u = m_hat / (sqrt(v_hat + eps_root) + eps), plus
// wd p, scaled by the trust ratio ||p|| / ||u|| (1 when either norm is 0); p <- p - lr u.
// optax's defaults: b1 0.9, b2 0.999, eps 1e-6, eps_root 0, weight_decay 0.
class Lamb final : public OptimizerType {
 public:
  explicit Lamb(const config::Node& o)
      : b1_(beta(o, "b1", 0.9)),
        b2_(beta(o, "b2", 0.999)),
        eps_(o.get_double_in("eps", 1e-6, 0, kInf)),
        eps_root_(o.get_double_in("eps_root", 0.0, 0, kInf)) {
    prototype_.weight_decay = o.get_double_in("weight_decay", 0.0, 0, kInf);
  }
  std::unique_ptr<torch::optim::OptimizerOptions> options() const override {
    return std::make_unique<HyperParams>(prototype_);
  }
  std::unique_ptr<torch::optim::Optimizer> create(
      std::vector<torch::optim::OptimizerParamGroup> groups) const override {
    return std::make_unique<PerParameterOptimizer>(
        "lamb", std::move(groups), options(), std::vector<std::string>{"mu", "nu"},
        [b1 = b1_, b2 = b2_, eps = eps_, eps_root = eps_root_](torch::Tensor& p, const torch::Tensor& g,
                                                               NamedParamState& s, const HyperParams& h) {
          torch::Tensor& mu = s.get("mu");
          torch::Tensor& nu = s.get("nu");
          mu.mul_(b1).add_(g, 1 - b1);
          nu.mul_(b2).addcmul_(g, g, 1 - b2);
          const double t = static_cast<double>(s.step);
          const double c1 = 1 - std::pow(b1, t), c2 = 1 - std::pow(b2, t);
          torch::Tensor u = (mu / c1).div_((nu / c2).add_(eps_root).sqrt_().add_(eps));
          if (h.weight_decay != 0) u.add_(p, h.weight_decay);
          // On the parameter's device (no host sync): optax's safe trust ratio.
          const torch::Tensor p_norm = p.norm(), u_norm = u.norm();
          const torch::Tensor trust =
              torch::where((p_norm == 0).logical_or(u_norm == 0), torch::ones_like(p_norm), p_norm / u_norm);
          p.add_(u.mul_(trust), -h.lr);
        });
  }

 private:
  double b1_, b2_, eps_, eps_root_;
  HyperParams prototype_;
};

}  // namespace

void detail::add_optax_optimizers(config::Registry<OptimizerType>& registry) {
  registry.add<Lion>("lion", "optax.lion: b1 = 0.9, b2 = 0.99, weight_decay = 1e-3");
  registry.add<Lamb>("lamb", "optax.lamb: b1 = 0.9, b2 = 0.999, eps = 1e-6, eps_root = 0, weight_decay = 0");
}

}  // namespace kd::optim
