// torch.optim's optimizers as OptimizerTypes, and the registry of every type.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/optim.h>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/optim/optimizer_type.h"
#include "trainer/optim/optimizer_types_internal.h"

namespace kd::optim {

double detail::beta(const config::Node& o, const char* key, double def) {
  const double v = o.get_double_in(key, def, 0, 1);
  if (v == 1) throw ConfigError(o.child(key).where() + ": \"" + o.key_path() + "." + key + "\" must be below 1, got 1");
  return v;
}

namespace {

using detail::beta;
using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamGroup;

using detail::kInf;

// Builds the torch options of `type` from YAML (the learning rate, and a param group's own weight
// decay, are set by the caller).
std::unique_ptr<OptimizerOptions> make_options(const std::string& type, const config::Node& o) {
  if (type == "sgd") {
    auto opts = std::make_unique<torch::optim::SGDOptions>(1e-3);
    opts->momentum(o.get_double_in("momentum", 0.0, 0, kInf))
        .nesterov(o.get_bool("nesterov", false))
        .dampening(o.get_double_in("dampening", 0.0, 0, 1))
        .weight_decay(o.get_double_in("weight_decay", 0.0, 0, kInf));
    if (opts->nesterov() && (opts->momentum() <= 0 || opts->dampening() != 0)) {
      throw ConfigError(o.where() + ": nesterov needs momentum > 0 and dampening 0");
    }
    return opts;
  }
  if (type == "adam" || type == "adamw") {
    const std::tuple<double, double> betas{beta(o, "b1", 0.9), beta(o, "b2", 0.999)};
    const double eps = o.get_double_in("eps", 1e-8, 0, kInf);
    const bool amsgrad = o.get_bool("amsgrad", false);
    if (type == "adam") {
      auto opts = std::make_unique<torch::optim::AdamOptions>(1e-3);
      opts->betas(betas).eps(eps).amsgrad(amsgrad).weight_decay(o.get_double_in("weight_decay", 0.0, 0, kInf));
      return opts;
    }
    auto opts = std::make_unique<torch::optim::AdamWOptions>(1e-3);
    opts->betas(betas).eps(eps).amsgrad(amsgrad).weight_decay(o.get_double_in("weight_decay", 1e-2, 0, kInf));
    return opts;
  }
  if (type == "rmsprop") {
    auto opts = std::make_unique<torch::optim::RMSpropOptions>(1e-3);
    opts->alpha(o.get_double_in("alpha", 0.99, 0, kInf))
        .eps(o.get_double_in("eps", 1e-8, 0, kInf))
        .momentum(o.get_double_in("momentum", 0.0, 0, kInf))
        .centered(o.get_bool("centered", false))
        .weight_decay(o.get_double_in("weight_decay", 0.0, 0, kInf));
    return opts;
  }
  if (type == "adagrad") {
    auto opts = std::make_unique<torch::optim::AdagradOptions>(1e-3);
    opts->lr_decay(o.get_double_in("lr_decay", 0.0, 0, kInf))
        .eps(o.get_double_in("eps", 1e-10, 0, kInf))
        .initial_accumulator_value(o.get_double_in("initial_accumulator_value", 0.0, 0, kInf))
        .weight_decay(o.get_double_in("weight_decay", 0.0, 0, kInf));
    return opts;
  }
  const std::vector<std::string> known = {"sgd", "adam", "adamw", "rmsprop", "adagrad"};
  std::string message = o.where() + ": unknown optimizer type \"" + type + "\"";
  const auto close = nearest(type, known, 1);
  if (!close.empty()) message += ". Did you mean \"" + close.front() + "\"?";
  throw ConfigError(message + " (known: " + join_names(known) + ")");
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& type,
                                                        std::vector<OptimizerParamGroup> groups,
                                                        const OptimizerOptions& defaults) {
  auto as = [&](auto* typed) { return *typed; };
  if (type == "sgd") {
    return std::make_unique<torch::optim::SGD>(std::move(groups),
                                               as(static_cast<const torch::optim::SGDOptions*>(&defaults)));
  }
  if (type == "adam") {
    return std::make_unique<torch::optim::Adam>(std::move(groups),
                                                as(static_cast<const torch::optim::AdamOptions*>(&defaults)));
  }
  if (type == "adamw") {
    return std::make_unique<torch::optim::AdamW>(std::move(groups),
                                                 as(static_cast<const torch::optim::AdamWOptions*>(&defaults)));
  }
  if (type == "rmsprop") {
    return std::make_unique<torch::optim::RMSprop>(std::move(groups),
                                                   as(static_cast<const torch::optim::RMSpropOptions*>(&defaults)));
  }
  return std::make_unique<torch::optim::Adagrad>(std::move(groups),
                                                 as(static_cast<const torch::optim::AdagradOptions*>(&defaults)));
}

// Each options type has its own weight_decay setter.
void set_weight_decay(OptimizerOptions& options, double weight_decay) {
  if (auto* s = dynamic_cast<torch::optim::SGDOptions*>(&options)) s->weight_decay(weight_decay);
  if (auto* s = dynamic_cast<torch::optim::AdamOptions*>(&options)) s->weight_decay(weight_decay);
  if (auto* s = dynamic_cast<torch::optim::AdamWOptions*>(&options)) s->weight_decay(weight_decay);
  if (auto* s = dynamic_cast<torch::optim::RMSpropOptions*>(&options)) s->weight_decay(weight_decay);
  if (auto* s = dynamic_cast<torch::optim::AdagradOptions*>(&options)) s->weight_decay(weight_decay);
}

// torch.optim's optimizers, built from the YAML map by make_options / make_optimizer.
class TorchOptimizerType final : public OptimizerType {
 public:
  TorchOptimizerType(std::string type, const config::Node& o)
      : type_(std::move(type)), prototype_(make_options(type_, o)) {}
  std::unique_ptr<OptimizerOptions> options() const override { return prototype_->clone(); }
  void set_weight_decay(OptimizerOptions& options, double weight_decay) const override {
    optim::set_weight_decay(options, weight_decay);
  }
  std::unique_ptr<torch::optim::Optimizer> create(std::vector<OptimizerParamGroup> groups) const override {
    return make_optimizer(type_, std::move(groups), *prototype_);
  }

 private:
  std::string type_;
  std::unique_ptr<OptimizerOptions> prototype_;
};

}  // namespace

config::Registry<OptimizerType>& optimizer_registry() {
  return config::Registry<OptimizerType>::built_once("optimizer", [](config::Registry<OptimizerType>& r) {
    const std::pair<const char*, const char*> torch_types[] = {
        {"sgd", "torch.optim.SGD: momentum = 0, nesterov = false, dampening = 0, weight_decay = 0"},
        {"adam", "torch.optim.Adam: b1 = 0.9, b2 = 0.999, eps = 1e-8, amsgrad = false, weight_decay = 0 (L2)"},
        {"adamw", "torch.optim.AdamW: b1 = 0.9, b2 = 0.999, eps = 1e-8, amsgrad = false, weight_decay = 1e-2"},
        {"rmsprop", "torch.optim.RMSprop: alpha = 0.99, eps = 1e-8, momentum = 0, centered = false, weight_decay = 0"},
        {"adagrad", "torch.optim.Adagrad: lr_decay = 0, eps = 1e-10, initial_accumulator_value = 0, weight_decay = 0"}};
    for (const auto& [name, doc] : torch_types) {
      const std::string type = name;
      r.add(
          type, [type](const config::Node& o) { return std::make_shared<TorchOptimizerType>(type, o); }, doc);
    }
    detail::add_optax_optimizers(r);
  });
}

}  // namespace kd::optim
