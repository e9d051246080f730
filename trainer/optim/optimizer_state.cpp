#include "trainer/optim/optimizer_state.h"

#include <torch/nn/module.h>
#include <torch/optim.h>

#include "trainer/common/error.h"
#include "trainer/compat/torch_compat.h"

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
  } else {
    throw NotSupportedError("cannot read the optimizer state of parameter \"" + param +
                            "\": only SGD, Adam, AdamW, RMSprop and Adagrad states are supported");
  }
  return out;
}

}  // namespace

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
