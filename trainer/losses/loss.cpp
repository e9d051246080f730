#include "trainer/losses/loss.h"

#include "trainer/common/error.h"
#include "trainer/metrics/states.h"
#include "trainer/train/context.h"

namespace kd::losses {

Loss::Loss(const config::Node& options)
    : mask_(optional_key(options, "mask")) {
  if (auto w = options.find("weight"); w && !w->is_null()) {
    weight_ = optim::make_schedule(*w);
  } else {
    weight_ = optim::constant_schedule(1.0);
  }
  const std::string normalize = options.get_string("normalize_by", "mask");
  if (normalize == "mask") {
    normalize_by_ = NormalizeBy::kMask;
  } else if (normalize == "values") {
    normalize_by_ = NormalizeBy::kValues;
  } else {
    throw ConfigError(options.where() + ": normalize_by must be \"mask\" or \"values\", got \"" +
                      normalize + "\"");
  }
}

torch::Tensor Loss::value(const train::Context& ctx) const {
  torch::Tensor total;
  torch::Tensor denominator;
  if (mask_) {
    const torch::Tensor v = values(ctx);
    torch::Tensor mask = read(ctx, *mask_).to(v.scalar_type());
    // Let a per-example mask [B] broadcast against values [B, ...].
    while (mask.dim() < v.dim()) mask = mask.unsqueeze(-1);
    mask = mask.expand_as(v);
    total = (v * mask).sum();
    denominator = normalize_by_ == NormalizeBy::kMask
                      ? mask.sum().clamp_min(1e-8)
                      : torch::scalar_tensor(static_cast<double>(v.numel()), v.options());
  } else {
    total = mean_value(ctx);
  }
  torch::Tensor loss = denominator.defined() ? total / denominator : total;
  const double w = weight(ctx.step);
  return w == 1.0 ? loss : loss * w;
}

Tree Loss::get_state(const torch::Tensor& value) const {
  return metrics::AverageState::make(value.detach(), int64_t{1});
}

}  // namespace kd::losses
