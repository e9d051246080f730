#include "trainer/losses/loss.h"

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/metrics/states.h"

namespace kd::losses {

Loss::Loss(const config::Node& options) : mask_(optional_key(options, "mask")) {
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
    throw ConfigError(options.where() + ": normalize_by must be \"mask\" or \"values\", got \"" + normalize + "\"");
  }
}

Loss::Mean Loss::mean_value(const train::Context& ctx) const {
  const torch::Tensor v = values(ctx);
  return {v.mean(), v.numel()};
}

Loss::Value Loss::evaluate(const train::Context& ctx) const {
  Value out;
  const torch::Tensor own = own_mask(ctx);
  if (mask_ || own.defined()) {
    const torch::Tensor v = values(ctx);
    torch::Tensor mask = mask_ ? read_mask(ctx, *mask_, v) : torch::Tensor();
    if (own.defined()) mask = mask.defined() ? mask * own.to(mask.scalar_type()) : own.to(v.scalar_type());
    const torch::Tensor total = (v * mask).sum();
    if (normalize_by_ == NormalizeBy::kMask) {
      // Counted in float64: a float32 count is exact only up to 2^24 (half precision: 2048).
      const torch::Tensor count = mask.sum(torch::kDouble);
      out.loss = total / count.clamp_min(1e-8).to(total.scalar_type());
      out.count = Tree(count.detach());
    } else {
      out.loss = total / static_cast<double>(v.numel());
      out.count = Tree(v.numel());
    }
  } else {
    Mean mean = mean_value(ctx);
    out.loss = std::move(mean.value);
    out.count = Tree(mean.count);
  }
  const double w = weight(ctx.step);
  if (w != 1.0) out.loss = out.loss * w;
  return out;
}

Tree Loss::get_state(const Value& value) const {
  const torch::Tensor loss = value.loss.detach();
  if (value.count.is_tensor()) return metrics::AverageState::make(loss * value.count.tensor(), value.count);
  return metrics::AverageState::make_mean(loss, value.count.to_int());  // no tensor operation per step
}

}  // namespace kd::losses
