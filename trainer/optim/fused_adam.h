// Adam and AdamW on the CPU in one pass over each parameter's memory instead of torch's eight
// tensor operations per parameter (each a dispatch, an allocation or a full pass), which on a
// small model cost more than the gradients themselves. A large parameter's pass is split between
// LibTorch's intra-op threads, as ATen's element-wise kernels are.
//
// The step reads and writes torch's own state (AdamParamState / AdamWParamState: step,
// exp_avg, exp_avg_sq, max_exp_avg_sq) and options (lr, betas, eps, weight_decay, amsgrad), so
// checkpoints, opt_state, schedules and anything else that reads the torch optimizer see it as
// ever. The arithmetic is torch's, operation for operation in float32: the fused multiply-adds
// where ATen's vectorised kernels take them (add_ with alpha, addcmul_), (value * m) / denom as
// addcdiv_ computes it, nothing contracted elsewhere. So the step equals torch::optim::Adam(W) and
// PyTorch 1.13's torch.optim.Adam(W) bit for bit wherever ATen runs its AVX2, AVX-512 or NEON
// kernels with a correctly rounded sqrt (Debian's 1.13; not PyPI's LibTorch 2, whose vectorised
// sqrt is not), for any number of threads, and gives the same bits on every CPU (std::fma is exact).
#pragma once

#include "trainer/common/torch_fwd.h"

namespace kd::optim {

// True when `optimizer` is Adam or AdamW and every parameter with a gradient is a dense,
// contiguous float32 CPU tensor, as are its gradient and its state: then fused_adam_step
// applies. A state not created yet (torch creates it lazily) is created as torch would.
bool fused_adam_applies(const torch::optim::Optimizer& optimizer);

// One step of `optimizer` (REQUIRES: fused_adam_applies(optimizer)), as its step() would take.
void fused_adam_step(torch::optim::Optimizer& optimizer);

}  // namespace kd::optim
