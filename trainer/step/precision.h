// Mixed precision, as PyTorch's torch.autocast and torch.amp.GradScaler do it: the forward pass
// runs under autocast in bfloat16 or float16 (matrix products and convolutions in the low
// precision, reductions and losses in float32); the parameters, their gradients and the optimizer
// state stay float32, and the losses and metrics read the predictions cast back to float32.
//
//   precision: bf16          # autocast on the CPU or CUDA
//   precision: fp16          # CUDA, with a gradient scaler (its state is in the checkpoints)
//   grad_scaler: {init_scale: 65536, growth_factor: 2, backoff_factor: 0.5, growth_interval: 2000}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "trainer/common/torch_fwd.h"
#include "trainer/config/node.h"
#include "trainer/tree/tree.h"

namespace kd::train {

enum class Precision { kFp32, kBf16, kFp16 };

// The experiment's `precision`: fp32 (the default) | bf16 | fp16. ConfigError naming the key for
// anything else, and for fp16 on a `device` other than CUDA.
Precision parse_precision(const config::Node& experiment, const c10::Device& device);
const char* precision_name(Precision precision);

// Where and in what the forward pass runs.
struct Autocast {
  Precision precision = Precision::kFp32;
  c10::DeviceType device = c10::DeviceType::CPU;
};

// Autocast on `autocast.device`'s type in its precision's dtype for the guard's lifetime (the
// previous setting is put back, and autocast's cache of cast weights dropped when the outermost
// guard ends). Does nothing for fp32.
class AutocastGuard {
 public:
  explicit AutocastGuard(const Autocast& autocast);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType device_ = c10::DeviceType::CPU;
  bool was_enabled_ = false;
  c10::ScalarType was_dtype_ = c10::ScalarType::Float;
};

// `tree` with its bfloat16 and float16 tensors cast to float32 (autograd goes through the cast).
Tree to_float32(const Tree& tree);

// torch.amp.GradScaler's arguments, with its defaults.
struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;

  // The experiment's `grad_scaler` section (marking its keys known); ConfigError naming the key.
  static GradScalerOptions from_config(const config::Node& node);
};

// Loss scaling for float16 (torch.amp.GradScaler): the loss is multiplied by the scale before
// backward, so that small gradients do not underflow; the gradients are divided by it before the
// update, and a step whose gradients overflowed is skipped and the scale reduced; after
// growth_interval steps without overflow the scale grows. With the default power-of-two factors
// scaling and unscaling are exact.
class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {});

  // The loss to call backward() on.
  torch::Tensor scale(const torch::Tensor& loss) const;
  // Divides the gradients of `params` by the scale in place; true when one is not finite (the
  // update is then to be skipped). Reads one flag on the host.
  bool unscale(const std::vector<torch::Tensor>& params) const;
  // After unscale(): the scale backs off after an overflow, or grows after growth_interval steps
  // without one.
  void update(bool found_inf);

  double current_scale() const { return scale_; }
  int64_t growth_tracker() const { return growth_tracker_; }
  const GradScalerOptions& options() const { return options_; }

  // {scale, growth_tracker}, for the checkpoints.
  Tree state() const;
  // From state(); CorruptionError naming `where` when it is not one.
  void restore(const Tree& state, const std::string& where);

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
};

}  // namespace kd::train
