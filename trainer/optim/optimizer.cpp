#include "trainer/optim/optimizer.h"

#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim.h>

#include "trainer/common/error.h"
#include "trainer/compat/torch_compat.h"
#include "trainer/optim/fused_adam.h"
#include "trainer/optim/optimizer_type.h"
#include "trainer/optim/optimizer_types_internal.h"
#include "trainer/tree/tree.h"

namespace kd::optim {
namespace {

using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamGroup;

using detail::kInf;

// The "params.<name>" of the parameters that the path globs of list `key` select.
std::set<std::string> selected_names(const torch::nn::Module& model, const config::Node& o, const char* key) {
  std::set<std::string> out;
  const auto patterns = o.get_string_list(key, std::vector<std::string>{});
  if (patterns.empty()) return out;
  const Tree root = Tree::dict({{"params", params_tree(model)}});
  for (const auto& pattern : patterns) {
    Path path;
    try {
      path = Path::parse(pattern);
      const std::size_t before = out.size();
      const auto chosen = root.select(path).flatten();
      for (const auto& [name, leaf] : chosen) out.insert(name);
      if (chosen.empty() && out.size() == before) {
        throw KeyError("chooses no param (they are params.<name>; kd inspect lists them)");
      }
    } catch (Error& e) {
      e.add_context(o.child(key).where() + ": " + (o.key_path().empty() ? "" : o.key_path() + ".") + key + " \"" +
                    pattern + "\"");
      throw;
    }
  }
  return out;
}

// Creates the per-parameter state torch would create lazily at the first step, with the same
// values (zeros, step 0), so opt_state can be read from step 0 on, as with optax. SGD's
// momentum buffer starts as the first gradient, which equals a zero buffer only without
// dampening; otherwise it stays lazy.
void initialize_state(torch::optim::Optimizer& optimizer, const std::string& type) {
  auto& states = optimizer.state();
  using StateMap = std::decay_t<decltype(states)>;
  for (const auto& group : optimizer.param_groups()) {
    const auto& options = group.options();
    for (const auto& p : group.params()) {
      const auto key = compat::optimizer_state_key<StateMap>(p);
      if (states.count(key)) continue;
      auto zeros = [&] { return torch::zeros_like(p, torch::MemoryFormat::Preserve); };
      if (type == "adam" || type == "adamw") {
        const bool amsgrad = type == "adam" ? static_cast<const torch::optim::AdamOptions&>(options).amsgrad()
                                            : static_cast<const torch::optim::AdamWOptions&>(options).amsgrad();
        auto make = [&](auto state) {
          state->step(0);
          state->exp_avg(zeros());
          state->exp_avg_sq(zeros());
          if (amsgrad) state->max_exp_avg_sq(zeros());
          states[key] = std::move(state);
        };
        if (type == "adam") {
          make(std::make_unique<torch::optim::AdamParamState>());
        } else {
          make(std::make_unique<torch::optim::AdamWParamState>());
        }
      } else if (type == "rmsprop") {
        const auto& o = static_cast<const torch::optim::RMSpropOptions&>(options);
        auto state = std::make_unique<torch::optim::RMSpropParamState>();
        state->step(0);
        state->square_avg(zeros());
        if (o.momentum() > 0) state->momentum_buffer(zeros());
        if (o.centered()) state->grad_avg(zeros());
        states[key] = std::move(state);
      } else if (type == "sgd") {
        const auto& o = static_cast<const torch::optim::SGDOptions&>(options);
        if (o.momentum() == 0 || o.dampening() != 0) continue;
        auto state = std::make_unique<torch::optim::SGDParamState>();
        state->momentum_buffer(zeros());
        states[key] = std::move(state);
      }
    }
  }
}

// The learning rate of `schedule` at step 0, checked finite and >= 0 (ConfigError at `node`).
void check_initial_learning_rate(const Schedule& schedule, const config::Node& node, const std::string& key) {
  if (const double lr = schedule(0); !(lr >= 0 && std::isfinite(lr))) {
    std::ostringstream got;
    got << lr;
    throw ConfigError(node.where() + ": \"" + key + "\" must be a finite number >= 0, got " + got.str() + " at step 0");
  }
}

// One entry of `param_groups`: the params it selects and its own learning rate / weight decay.
}  // namespace

Optimizer::Options Optimizer::Options::from_config(const config::Node& o, const torch::nn::Module& model) {
  Options out;
  out.type = o.get_string("type");
  const std::string prefix = o.key_path().empty() ? "" : o.key_path() + ".";
  if (auto lr = o.find("learning_rate"); lr && !lr->is_null()) {
    out.learning_rate = make_schedule(*lr);
  } else {
    throw ConfigError(o.where() + ": the optimizer needs a learning_rate (a number or a schedule)");
  }
  check_initial_learning_rate(*out.learning_rate, o.child("learning_rate"), prefix + "learning_rate");
  out.clip_global_norm = o.get_double_in("clip_global_norm", 0.0, 0, kInf);
  out.accumulate_steps = o.get_int("accumulate_steps", 1);
  if (out.accumulate_steps < 1) throw ConfigError(o.where() + ": accumulate_steps must be >= 1");
  out.ema_decay = o.get_double("ema_decay", 0.0);
  if (out.ema_decay < 0 || out.ema_decay >= 1) throw ConfigError(o.where() + ": ema_decay must be in [0, 1)");
  out.weight_decay_exclude = selected_names(model, o, "weight_decay_exclude");
  // Frozen (Kauldron's partial_updates): no gradient, no update, no optimizer state.
  out.freeze = selected_names(model, o, "freeze");
  out.freeze_where = (o.has("freeze") ? o.child("freeze").where() : o.where()) + ": " + prefix + "freeze";
  out.param_groups_where = o.has("param_groups") ? o.child("param_groups").where() : o.where();
  // param_groups: their own learning rate and weight decay for the params they select.
  if (auto pg = o.find("param_groups"); pg && !pg->is_null()) {
    if (!pg->is_sequence()) {
      throw ConfigError(pg->where() +
                        ": param_groups is a list of {select: [params.head.**], learning_rate, "
                        "weight_decay}");
    }
    const auto nodes = pg->elements();
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      const config::Node& g = nodes[i];
      ParamGroup group;
      group.name = g.get_string("name", "group" + std::to_string(i));
      group.selected = selected_names(model, g, "select");
      if (!g.has("select")) throw ConfigError(g.where() + ": a param group needs `select` (path globs of params)");
      if (auto lr = g.find("learning_rate"); lr && !lr->is_null()) {
        group.learning_rate = make_schedule(*lr);
        check_initial_learning_rate(*group.learning_rate, *lr, g.key_path() + ".learning_rate");
      }
      if (g.has("weight_decay")) group.weight_decay = g.get_double_in("weight_decay", std::nullopt, 0, kInf);
      g.check_unknown_keys();
      out.param_groups.push_back(std::move(group));
    }
  }
  // Every key of the optimizer's own is read: the type reads (and checks) the rest.
  out.kind = optimizer_registry().create(o);
  return out;
}

Optimizer::Optimizer(const config::Node& o, torch::nn::Module& model)
    : Optimizer(Options::from_config(o, model), model) {}

Optimizer::Optimizer(Options o, torch::nn::Module& model)
    : model_(model),
      type_(o.type),
      kind_(o.kind),
      learning_rate_(o.learning_rate),
      clip_global_norm_(o.clip_global_norm),
      accumulate_steps_(o.accumulate_steps),
      ema_decay_(o.ema_decay) {
  optimizer_ = kind_->create(make_param_groups(o));
  initialize_state(*optimizer_, type_);
  if (has_ema()) {
    torch::NoGradGuard no_grad;
    ema_params_ = params_tree(model).map([](const torch::Tensor& t) { return t.detach().clone(); });
    // The tree was built from the same module, so its leaves follow params_' order.
    for (const auto& [path, leaf] : ema_params_.flatten()) ema_tensors_.push_back(leaf.tensor());
  }
}

std::vector<OptimizerParamGroup> Optimizer::make_param_groups(const Options& o) {
  const auto& specs = o.param_groups;
  struct Bucket {
    std::vector<torch::Tensor> params;
    SchedulePtr learning_rate;
    std::optional<double> weight_decay;
  };
  std::vector<Bucket> buckets(2 * (specs.size() + 1));  // [decayed, not decayed] per group
  for (std::size_t g = 0; g <= specs.size(); ++g) {
    const bool own = g > 0;
    buckets[2 * g].learning_rate = own && specs[g - 1].learning_rate ? specs[g - 1].learning_rate : learning_rate_;
    buckets[2 * g + 1].learning_rate = buckets[2 * g].learning_rate;
    if (own) buckets[2 * g].weight_decay = specs[g - 1].weight_decay;
    buckets[2 * g + 1].weight_decay = 0.0;
  }
  for (const auto& item : model_.named_parameters(/*recurse=*/true)) {
    const std::string name = "params." + item.key();
    params_.push_back(item.value());
    frozen_.push_back(o.freeze.count(name) != 0);
    if (frozen_.back()) {
      item.value().requires_grad_(false);
      continue;
    }
    std::size_t group = 0;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      if (!specs[i].selected.count(name)) continue;
      if (group != 0) {
        throw ConfigError(o.param_groups_where + ": " + name + " is selected by param groups \"" +
                          specs[group - 1].name + "\" and \"" + specs[i].name + "\"; a param belongs to one");
      }
      group = i + 1;
    }
    buckets[2 * group + (o.weight_decay_exclude.count(name) ? 1 : 0)].params.push_back(item.value());
  }
  std::size_t trained = 0;
  for (const auto& b : buckets) trained += b.params.size();
  if (!params_.empty() && trained == 0) {
    throw ConfigError(o.freeze_where + " selects every parameter: nothing would train");
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (buckets[2 * (i + 1)].params.empty() && buckets[2 * (i + 1) + 1].params.empty()) {
      throw ConfigError(o.param_groups_where + ": param group \"" + specs[i].name +
                        "\" selects no trained param (every one it selects is frozen)");
    }
  }
  std::vector<OptimizerParamGroup> groups;
  for (auto& b : buckets) {
    if (b.params.empty()) continue;
    std::unique_ptr<OptimizerOptions> options = kind_->options();
    if (b.weight_decay) kind_->set_weight_decay(*options, *b.weight_decay);
    options->set_lr((*b.learning_rate)(0));
    groups.emplace_back(std::move(b.params), std::move(options));
    group_learning_rates_.push_back(b.learning_rate);
  }
  for (const auto& spec : specs) {
    if (spec.learning_rate) named_group_learning_rates_.emplace_back(spec.name, spec.learning_rate);
  }
  return groups;
}

Optimizer::~Optimizer() = default;

void Optimizer::clear_gradients() {
  for (auto& group : optimizer_->param_groups()) {
    for (auto& p : group.params()) {
      if (p.grad().defined()) p.mutable_grad().reset();
    }
  }
}

void Optimizer::apply(int64_t step) {
  auto& groups = optimizer_->param_groups();
  const double lr = learning_rate(step);
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const Schedule* own = group_learning_rates_[i].get();
    groups[i].options().set_lr(own == learning_rate_.get() ? lr : (*own)(step));
  }
  if (clip_global_norm_ > 0) torch::nn::utils::clip_grad_norm_(params_, clip_global_norm_);
  if (fused_adam_applies(*optimizer_)) {
    fused_adam_step(*optimizer_);
  } else {
    optimizer_->step();
  }
  if (has_ema()) update_ema();
}

void Optimizer::update_ema() {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < ema_tensors_.size(); ++i) {
    if (frozen_[i]) continue;  // equal to the parameter, which does not change
    ema_tensors_[i].mul_(ema_decay_).add_(params_[i].detach(), 1.0 - ema_decay_);
  }
}

Optimizer::EmaParamsGuard::EmaParamsGuard(Optimizer& optimizer) : optimizer_(optimizer) {
  if (!optimizer.has_ema()) throw Error("evaluating the EMA params of an optimizer without ema_decay");
  torch::NoGradGuard no_grad;
  own_.reserve(optimizer.params_.size());
  for (std::size_t i = 0; i < optimizer.params_.size(); ++i) {
    own_.push_back(optimizer.params_[i].detach());  // a second tensor on the same storage
    optimizer.params_[i].set_data(optimizer.ema_tensors_[i]);
  }
}

Optimizer::EmaParamsGuard::~EmaParamsGuard() {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < own_.size(); ++i) optimizer_.params_[i].set_data(own_[i]);
}

std::vector<std::pair<std::string, double>> Optimizer::schedules(int64_t step) const {
  std::vector<std::pair<std::string, double>> out = {{"learning_rate", learning_rate(step)}};
  for (const auto& [name, schedule] : named_group_learning_rates_)
    out.emplace_back("learning_rate/" + name, (*schedule)(step));
  return out;
}

}  // namespace kd::optim
