#define KD_COMPAT_AUTOCAST
#include "trainer/step/precision.h"

#include <cmath>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/compat/torch_compat.h"

namespace kd::train {

Precision parse_precision(const config::Node& experiment, const c10::Device& device) {
  const std::string name = experiment.get_string("precision", "fp32");
  const std::string where = experiment.has("precision") ? experiment.child("precision").where() : experiment.where();
  Precision precision;
  if (name == "fp32" || name == "float32") {
    precision = Precision::kFp32;
  } else if (name == "bf16" || name == "bfloat16") {
    precision = Precision::kBf16;
  } else if (name == "fp16" || name == "float16") {
    precision = Precision::kFp16;
  } else {
    throw ConfigError(where + ": precision must be fp32, bf16 or fp16, got \"" + name + "\"");
  }
  if (precision == Precision::kFp16 && !device.is_cuda()) {
    throw ConfigError(where + ": precision fp16 needs device: cuda (on " + device.str() +
                      " use precision: bf16, which needs no loss scaling)");
  }
  if (experiment.has("grad_scaler") && precision != Precision::kFp16) {
    throw ConfigError(experiment.child("grad_scaler").where() +
                      ": grad_scaler is for precision: fp16 (bf16 and fp32 need no loss scaling); remove it");
  }
  return precision;
}

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
    case Precision::kFp32:
      break;
  }
  return "fp32";
}

AutocastGuard::AutocastGuard(const Autocast& autocast) : device_(autocast.device) {
  if (autocast.precision == Precision::kFp32) return;
  active_ = true;
  was_enabled_ = compat::autocast_enabled(device_);
  was_dtype_ = compat::autocast_dtype(device_);
  compat::set_autocast_enabled(device_, true);
  compat::set_autocast_dtype(device_, autocast.precision == Precision::kBf16 ? at::kBFloat16 : at::kHalf);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast_enabled(device_, was_enabled_);
  compat::set_autocast_dtype(device_, was_dtype_);
}

Tree to_float32(const Tree& tree) {
  return tree.map([](const torch::Tensor& t) {
    const auto type = t.scalar_type();
    return type == torch::kBFloat16 || type == torch::kHalf ? t.to(torch::kFloat) : t;
  });
}

GradScalerOptions GradScalerOptions::from_config(const config::Node& node) {
  GradScalerOptions o;
  if (node.is_null()) return o;
  o.init_scale = node.get_double("init_scale", o.init_scale);
  o.growth_factor = node.get_double("growth_factor", o.growth_factor);
  o.backoff_factor = node.get_double("backoff_factor", o.backoff_factor);
  o.growth_interval = node.get_int("growth_interval", o.growth_interval);
  if (!(o.init_scale > 0) || !std::isfinite(o.init_scale)) {
    throw ConfigError(node.child("init_scale").where() + ": init_scale must be a finite number > 0");
  }
  if (!(o.growth_factor > 1) || !std::isfinite(o.growth_factor)) {
    throw ConfigError(node.child("growth_factor").where() + ": growth_factor must be > 1");
  }
  if (!(o.backoff_factor > 0 && o.backoff_factor < 1)) {
    throw ConfigError(node.child("backoff_factor").where() + ": backoff_factor must be in (0, 1)");
  }
  if (o.growth_interval < 1) {
    throw ConfigError(node.child("growth_interval").where() + ": growth_interval must be >= 1");
  }
  return o;
}

GradScaler::GradScaler(GradScalerOptions options) : options_(options), scale_(options.init_scale) {}

torch::Tensor GradScaler::scale(const torch::Tensor& loss) const { return loss * scale_; }

bool GradScaler::unscale(const std::vector<torch::Tensor>& params) const {
  torch::NoGradGuard no_grad;
  const double inverse = 1.0 / scale_;
  torch::Tensor bad;
  for (const torch::Tensor& p : params) {
    torch::Tensor g = p.grad();
    if (!g.defined()) continue;
    g.mul_(inverse);
    torch::Tensor here = torch::isfinite(g).all().logical_not();
    bad = bad.defined() ? bad.logical_or_(here) : here;
  }
  return bad.defined() && bad.item<bool>();
}

void GradScaler::update(bool found_inf) {
  if (found_inf) {
    scale_ *= options_.backoff_factor;
    growth_tracker_ = 0;
    return;
  }
  if (++growth_tracker_ >= options_.growth_interval) {
    const double grown = scale_ * options_.growth_factor;
    if (std::isfinite(grown)) scale_ = grown;
    growth_tracker_ = 0;
  }
}

Tree GradScaler::state() const {
  Tree t = Tree::dict();
  t.insert("scale", scale_);
  t.insert("growth_tracker", growth_tracker_);
  return t;
}

void GradScaler::restore(const Tree& state, const std::string& where) {
  const Tree* scale = state.is_dict() ? state.find("scale") : nullptr;
  const Tree* tracker = state.is_dict() ? state.find("growth_tracker") : nullptr;
  if (!scale || !tracker || scale->kind() != Tree::Kind::kFloat || tracker->kind() != Tree::Kind::kInt) {
    throw CorruptionError(where + ": its grad_scaler state is not {scale: float, growth_tracker: int}");
  }
  const double s = scale->to_double();
  if (!(s > 0) || !std::isfinite(s) || tracker->to_int() < 0) {
    throw CorruptionError(where + ": its grad_scaler state holds scale " + std::to_string(s) + " and growth_tracker " +
                          std::to_string(tracker->to_int()) + " (a scale must be finite and > 0)");
  }
  scale_ = s;
  growth_tracker_ = tracker->to_int();
}

}  // namespace kd::train
