#include "trainer/optim/fused_adam.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <iterator>

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
#include <torch/optim.h>

#include "trainer/compat/torch_compat.h"

namespace kd::optim {
namespace {

using torch::optim::Adam;
using torch::optim::AdamOptions;
using torch::optim::AdamParamState;
using torch::optim::AdamW;
using torch::optim::AdamWOptions;
using torch::optim::AdamWParamState;

// The constants of one parameter's step, as torch computes them (in double, then float where
// torch's kernels take them as float scalars).
struct Step {
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float weight_decay;     // Adam: added to the gradient (0: none)
  float decoupled_decay;  // AdamW: 1 - lr * weight_decay, multiplies the parameter (1: none)
  float bias_correction2_sqrt;
  float eps;
  float neg_step_size;  // -lr / bias_correction1
  bool amsgrad;
};

bool fits(const torch::Tensor& t, const torch::Tensor& p) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.layout() == torch::kStrided &&
         t.is_contiguous() && t.sizes() == p.sizes();
}

// The elements [begin, end) of one parameter. Written so that the compiler vectorises it for the
// CPU at hand (the file is built without floating-point contraction: the same bits everywhere).
#if defined(__x86_64__)
#define KD_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KD_CPU_CLONES
#endif

// One loop per combination of the options that change the arithmetic: no branch inside, so it
// vectorises (inlined into each CPU clone of `update`).
template <bool kL2Decay, bool kAmsgrad>
[[gnu::always_inline]] inline void update_loop(const Step& s, float* __restrict p, const float* __restrict g,
                                               float* __restrict m, float* __restrict v, float* __restrict vmax,
                                               int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    float grad = g[i];
    if constexpr (kL2Decay) grad = std::fma(p[i], s.weight_decay, grad);        // grad.add(p, weight_decay)
    const float param = p[i] * s.decoupled_decay;                               // p.mul_(1 - lr * weight_decay)
    const float mi = std::fma(grad, s.one_minus_beta1, m[i] * s.beta1);         // exp_avg.mul_(b1).add_(grad, 1 - b1)
    const float vi = std::fma(s.one_minus_beta2 * grad, grad, v[i] * s.beta2);  // .mul_(b2).addcmul_(g, g, 1 - b2)
    m[i] = mi;
    v[i] = vi;
    float second = vi;
    if constexpr (kAmsgrad) {
      second = std::max(vmax[i], vi);  // max_out(max_exp_avg_sq, exp_avg_sq, max_exp_avg_sq)
      vmax[i] = second;
    }
    const float denom = std::sqrt(second) / s.bias_correction2_sqrt + s.eps;  // (sqrt / sqrt(bc2)).add_(eps)
    p[i] = param + (s.neg_step_size * mi) / denom;                            // p.addcdiv_(m, denom, -step_size)
  }
}

KD_CPU_CLONES void update(const Step& s, float* __restrict p, const float* __restrict g, float* __restrict m,
                          float* __restrict v, float* __restrict vmax, int64_t begin, int64_t end) {
  const bool decay = s.weight_decay != 0.0f;
  if (decay && s.amsgrad) {
    update_loop<true, true>(s, p, g, m, v, vmax, begin, end);
  } else if (decay) {
    update_loop<true, false>(s, p, g, m, v, vmax, begin, end);
  } else if (s.amsgrad) {
    update_loop<false, true>(s, p, g, m, v, vmax, begin, end);
  } else {
    update_loop<false, false>(s, p, g, m, v, vmax, begin, end);
  }
}

// Whether no two of the tensors share memory (the undefined ones left out).
bool separate(std::initializer_list<const torch::Tensor*> tensors) {
  for (auto i = tensors.begin(); i != tensors.end(); ++i) {
    for (auto j = std::next(i); j != tensors.end(); ++j) {
      if ((*i)->defined() && (*j)->defined() && (*i)->is_alias_of(**j)) return false;
    }
  }
  return true;
}

// Runs `update` over the elements of one parameter, split between LibTorch's intra-op threads as
// its own element-wise kernels are (TensorIterator::for_each: ranges of at least 32768 elements,
// on the OpenMP or native pool that LibTorch was built with, so kd needs no OpenMP flags of its
// own). Each element's update reads only that element: the bits do not depend on the split,
// hence not on the number of threads. A parameter that one thread takes whole (at most one grain,
// or one thread) is updated directly, without the iterator (whose build costs microseconds, a
// visible share of a small model's step), where no two of its tensors share memory (the iterator
// checks that and refuses).
void run_parallel(const Step& s, const torch::Tensor& param, const torch::Tensor& grad, const torch::Tensor& m,
                  const torch::Tensor& v, const torch::Tensor& vmax) {
  const int64_t n = param.numel();
  if ((n <= at::internal::GRAIN_SIZE || at::get_num_threads() == 1) && separate({&param, &grad, &m, &v, &vmax})) {
    update(s, param.data_ptr<float>(), grad.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(),
           vmax.defined() ? vmax.data_ptr<float>() : nullptr, 0, n);
    return;
  }
  at::TensorIteratorConfig config;
  config.set_check_mem_overlap(true).check_all_same_dtype(true).resize_outputs(false);
  config.add_output(param).add_output(m).add_output(v);
  if (vmax.defined()) config.add_output(vmax);
  config.add_input(grad);
  at::TensorIterator iter = config.build();
  const int ntensors = iter.ntensors();
  const int grad_index = ntensors - 1;
  iter.for_each([&](char** data, const int64_t* strides, int64_t size0, int64_t size1) {
    for (int t = 0; t < ntensors; ++t) {
      TORCH_INTERNAL_ASSERT(strides[t] == static_cast<int64_t>(sizeof(float)), "fused Adam: a strided tensor");
    }
    for (int64_t outer = 0; outer < size1; ++outer) {
      const auto at = [&](int t) { return reinterpret_cast<float*>(data[t] + outer * strides[ntensors + t]); };
      update(s, at(0), at(grad_index), at(1), at(2), vmax.defined() ? at(3) : nullptr, 0, size0);
    }
  });
}

template <typename Options, typename State>
void step_group(torch::optim::OptimizerParamGroup& group, torch::optim::Optimizer& optimizer, bool decoupled) {
  auto& states = optimizer.state();
  using StateMap = std::decay_t<decltype(states)>;
  const auto& o = static_cast<const Options&>(group.options());
  for (auto& p : group.params()) {
    if (!p.grad().defined()) continue;
    auto& slot = states[compat::optimizer_state_key<StateMap>(p)];
    if (!slot) {  // created at the first step, as torch does
      auto fresh = std::make_unique<State>();
      fresh->step(0);
      fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      if (o.amsgrad()) fresh->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      slot = std::move(fresh);
    }
    auto& state = static_cast<State&>(*slot);
    state.step(state.step() + 1);
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(state.step()));
    const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(state.step()));
    const Step s{.beta1 = static_cast<float>(beta1),
                 .beta2 = static_cast<float>(beta2),
                 .one_minus_beta1 = static_cast<float>(1 - beta1),
                 .one_minus_beta2 = static_cast<float>(1 - beta2),
                 .weight_decay = decoupled ? 0.0f : static_cast<float>(o.weight_decay()),
                 .decoupled_decay = decoupled ? static_cast<float>(1 - o.lr() * o.weight_decay()) : 1.0f,
                 .bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2)),
                 .eps = static_cast<float>(o.eps()),
                 .neg_step_size = static_cast<float>(-(o.lr() / bias_correction1)),
                 .amsgrad = o.amsgrad()};
    run_parallel(s, p, p.grad(), state.exp_avg(), state.exp_avg_sq(),
                 o.amsgrad() ? state.max_exp_avg_sq() : torch::Tensor());
    // As in-place tensor operations would, so autograd sees the tensors changed.
    for (const torch::Tensor& t : {p, state.exp_avg(), state.exp_avg_sq()}) t.unsafeGetTensorImpl()->bump_version();
    if (o.amsgrad()) state.max_exp_avg_sq().unsafeGetTensorImpl()->bump_version();
  }
}

template <typename Options, typename State>
bool group_fits(const torch::optim::OptimizerParamGroup& group, const torch::optim::Optimizer& optimizer) {
  const auto& states = optimizer.state();
  using StateMap = std::decay_t<decltype(states)>;
  const auto& o = static_cast<const Options&>(group.options());
  for (const auto& p : group.params()) {
    if (!p.grad().defined()) continue;
    if (!fits(p, p) || !fits(p.grad(), p) || p.grad().is_sparse()) return false;
    const auto it = states.find(compat::optimizer_state_key<StateMap>(p));
    if (it == states.end()) continue;
    const auto* state = dynamic_cast<const State*>(it->second.get());
    if (!state || !fits(state->exp_avg(), p) || !fits(state->exp_avg_sq(), p)) return false;
    if (o.amsgrad() && !fits(state->max_exp_avg_sq(), p)) return false;
  }
  return true;
}

}  // namespace

bool fused_adam_applies(const torch::optim::Optimizer& optimizer) {
  const bool adamw = dynamic_cast<const AdamW*>(&optimizer) != nullptr;
  if (!adamw && dynamic_cast<const Adam*>(&optimizer) == nullptr) return false;
  for (const auto& group : optimizer.param_groups()) {
    if (adamw ? !group_fits<AdamWOptions, AdamWParamState>(group, optimizer)
              : !group_fits<AdamOptions, AdamParamState>(group, optimizer)) {
      return false;
    }
  }
  return true;
}

void fused_adam_step(torch::optim::Optimizer& optimizer) {
  torch::NoGradGuard no_grad;
  const bool adamw = dynamic_cast<const AdamW*>(&optimizer) != nullptr;
  for (auto& group : optimizer.param_groups()) {
    if (adamw) {
      step_group<AdamWOptions, AdamWParamState>(group, optimizer, /*decoupled=*/true);
    } else {
      step_group<AdamOptions, AdamParamState>(group, optimizer, /*decoupled=*/false);
    }
  }
}

}  // namespace kd::optim
