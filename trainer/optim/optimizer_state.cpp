#include "trainer/optim/optimizer_state.h"

#include <memory>
#include <optional>
#include <set>
#include <string>

#include <torch/nn/module.h>
#include <torch/optim.h>

#include "trainer/common/error.h"
#include "trainer/compat/torch_compat.h"
#include "trainer/optim/optimizer_type.h"

namespace kd::optim {
namespace {

void put(Tree& out, const char* name, const torch::Tensor& t) {
  if (t.defined()) out.insert(name, t);
}

Tree param_state_tree(const torch::optim::OptimizerParamState& state, const std::string& param) {
  using namespace torch::optim;
  Tree out = Tree::dict();
  if (const auto* s = dynamic_cast<const AdamParamState*>(&state)) {
    out.insert("step", static_cast<int64_t>(s->step()));
    put(out, "exp_avg", s->exp_avg());
    put(out, "exp_avg_sq", s->exp_avg_sq());
    put(out, "max_exp_avg_sq", s->max_exp_avg_sq());
  } else if (const auto* s = dynamic_cast<const AdamWParamState*>(&state)) {
    out.insert("step", static_cast<int64_t>(s->step()));
    put(out, "exp_avg", s->exp_avg());
    put(out, "exp_avg_sq", s->exp_avg_sq());
    put(out, "max_exp_avg_sq", s->max_exp_avg_sq());
  } else if (const auto* s = dynamic_cast<const SGDParamState*>(&state)) {
    put(out, "momentum_buffer", s->momentum_buffer());
  } else if (const auto* s = dynamic_cast<const RMSpropParamState*>(&state)) {
    out.insert("step", static_cast<int64_t>(s->step()));
    put(out, "square_avg", s->square_avg());
    put(out, "momentum_buffer", s->momentum_buffer());
    put(out, "grad_avg", s->grad_avg());
  } else if (const auto* s = dynamic_cast<const AdagradParamState*>(&state)) {
    out.insert("step", static_cast<int64_t>(s->step()));
    put(out, "sum", s->sum());
  } else if (const auto* s = dynamic_cast<const NamedParamState*>(&state)) {
    out.insert("step", s->step);
    for (const auto& [name, t] : s->tensors) put(out, name.c_str(), t);
  } else {
    throw NotSupportedError("cannot read the optimizer state of parameter \"" + param +
                            "\": only SGD, Adam, AdamW, RMSprop, Adagrad and kd::optim::PerParameterOptimizer states "
                            "are supported");
  }
  return out;
}

// The tensor `name` of a parameter's state: nullopt when absent; it must fit the parameter. Its
// values are copied into `reuse` (the state's tensor before the load) when that fits, so that a
// restore neither allocates nor touches fresh memory, else into a new tensor; with `adopt`, the
// tensor itself is kept when it is on the parameter's device (no copy at all).
std::optional<torch::Tensor> field(const Tree& state, const char* name, const torch::Tensor& param,
                                   const std::string& where, const torch::Tensor& reuse, bool adopt) {
  const Tree* t = state.find(name);
  if (t == nullptr || t->is_none()) return std::nullopt;
  if (!t->is_tensor() || t->tensor().sizes() != param.sizes() || t->tensor().scalar_type() != param.scalar_type()) {
    throw CorruptionError("the optimizer state " + where + "." + name + " is " + t->describe() +
                          ", but the parameter is " + describe_tensor(param));
  }
  if (adopt && t->tensor().device() == param.device() && t->tensor().is_contiguous()) return t->tensor().detach();
  if (reuse.defined() && reuse.sizes() == param.sizes() && reuse.scalar_type() == param.scalar_type() &&
      reuse.device() == param.device() && reuse.is_contiguous() && !reuse.is_same(t->tensor())) {
    torch::NoGradGuard no_grad;
    reuse.copy_(t->tensor());
    return reuse;
  }
  return t->tensor().detach().clone().to(param.device());
}

int64_t step_of(const Tree& state, const std::string& where) {
  const Tree* t = state.find("step");
  if (t == nullptr) return 0;
  if (t->kind() != Tree::Kind::kInt || t->to_int() < 0)
    throw CorruptionError("the optimizer state " + where + ".step is not a count");
  return t->to_int();
}

// `before`: the parameter's state before the load (or null), whose tensors are reused.
std::unique_ptr<torch::optim::OptimizerParamState> make_param_state(const torch::optim::Optimizer& optimizer,
                                                                    const Tree& s, const torch::Tensor& p,
                                                                    const std::string& where,
                                                                    torch::optim::OptimizerParamState* before,
                                                                    bool adopt) {
  using namespace torch::optim;
  const auto set_adam = [&](auto state) {
    using State = std::remove_reference_t<decltype(*state)>;
    const auto* old = dynamic_cast<const State*>(before);
    state->step(step_of(s, where));
    if (auto t = field(s, "exp_avg", p, where, old ? old->exp_avg() : torch::Tensor(), adopt)) state->exp_avg(*t);
    if (auto t = field(s, "exp_avg_sq", p, where, old ? old->exp_avg_sq() : torch::Tensor(), adopt))
      state->exp_avg_sq(*t);
    if (auto t = field(s, "max_exp_avg_sq", p, where, old ? old->max_exp_avg_sq() : torch::Tensor(), adopt))
      state->max_exp_avg_sq(*t);
    if (!state->exp_avg().defined() || !state->exp_avg_sq().defined()) {
      throw CorruptionError("the optimizer state " + where + " lacks exp_avg or exp_avg_sq");
    }
    return state;
  };
  if (dynamic_cast<const AdamW*>(&optimizer)) return set_adam(std::make_unique<AdamWParamState>());
  if (dynamic_cast<const Adam*>(&optimizer)) return set_adam(std::make_unique<AdamParamState>());
  if (dynamic_cast<const SGD*>(&optimizer)) {
    auto state = std::make_unique<SGDParamState>();
    const auto* old = dynamic_cast<const SGDParamState*>(before);
    if (auto t = field(s, "momentum_buffer", p, where, old ? old->momentum_buffer() : torch::Tensor(), adopt))
      state->momentum_buffer(*t);
    return state;
  }
  if (dynamic_cast<const RMSprop*>(&optimizer)) {
    auto state = std::make_unique<RMSpropParamState>();
    const auto* old = dynamic_cast<const RMSpropParamState*>(before);
    state->step(step_of(s, where));
    if (auto t = field(s, "square_avg", p, where, old ? old->square_avg() : torch::Tensor(), adopt))
      state->square_avg(*t);
    if (auto t = field(s, "momentum_buffer", p, where, old ? old->momentum_buffer() : torch::Tensor(), adopt))
      state->momentum_buffer(*t);
    if (auto t = field(s, "grad_avg", p, where, old ? old->grad_avg() : torch::Tensor(), adopt)) state->grad_avg(*t);
    if (!state->square_avg().defined()) throw CorruptionError("the optimizer state " + where + " lacks square_avg");
    return state;
  }
  if (dynamic_cast<const Adagrad*>(&optimizer)) {
    auto state = std::make_unique<AdagradParamState>();
    const auto* old = dynamic_cast<const AdagradParamState*>(before);
    state->step(step_of(s, where));
    if (auto t = field(s, "sum", p, where, old ? old->sum() : torch::Tensor(), adopt)) state->sum(*t);
    if (!state->sum().defined()) throw CorruptionError("the optimizer state " + where + " lacks sum");
    return state;
  }
  if (const auto* per = dynamic_cast<const PerParameterOptimizer*>(&optimizer)) {
    auto state = std::make_unique<NamedParamState>();
    auto* old = dynamic_cast<NamedParamState*>(before);
    state->step = step_of(s, where);
    for (const auto& name : per->state_names()) {
      torch::Tensor reuse;
      if (old) {
        for (const auto& [n, t] : old->tensors) {
          if (n == name) reuse = t;
        }
      }
      auto t = field(s, name.c_str(), p, where, reuse, adopt);
      if (!t) throw CorruptionError("the optimizer state " + where + " lacks " + name);
      state->tensors.emplace_back(name, *t);
    }
    return state;
  }
  throw NotSupportedError("cannot restore the optimizer state of parameter \"" + where +
                          "\": only SGD, Adam, AdamW, RMSprop and Adagrad states are supported");
}

}  // namespace

void load_optimizer_state(torch::optim::Optimizer& optimizer, const torch::nn::Module& module, const Tree& state,
                          bool adopt) {
  auto& states = optimizer.state();
  using StateMap = std::decay_t<decltype(states)>;
  StateMap before = std::move(states);  // its tensors take the loaded values
  states.clear();
  try {
    std::size_t loaded = 0;
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      const std::optional<Tree> s = state.try_get(Path::from_dotted(item.key()));
      if (!s) continue;
      if (!s->is_dict()) throw CorruptionError("the optimizer state of " + item.key() + " is not a dict of fields");
      const auto key = compat::optimizer_state_key<StateMap>(item.value());
      const auto old = before.find(key);
      states[key] = make_param_state(optimizer, *s, item.value(), item.key(),
                                     old == before.end() ? nullptr : old->second.get(), adopt);
      ++loaded;
    }
    // Every entry is a parameter's.
    std::set<std::string> names;
    for (const auto& item : module.named_parameters(/*recurse=*/true)) names.insert(item.key());
    for (const auto& [path, leaf] : state.flatten_paths()) {
      const std::string key = path.str();
      const std::string param = key.substr(0, key.rfind('.'));
      if (!names.count(param))
        throw CorruptionError("the optimizer state " + key + " is for no parameter of the model");
    }
    (void)loaded;
  } catch (...) {
    states.clear();
    throw;
  }
}

Tree optimizer_state_tree(const torch::optim::Optimizer& optimizer, const torch::nn::Module& module) {
  const auto& states = optimizer.state();
  using StateMap = std::decay_t<decltype(states)>;
  Tree out = Tree::dict();
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const auto it = states.find(compat::optimizer_state_key<StateMap>(item.value()));
    if (it == states.end()) continue;
    out = out.set(Path::from_dotted(item.key()), param_state_tree(*it->second, item.key()));
  }
  return out;
}

}  // namespace kd::optim
