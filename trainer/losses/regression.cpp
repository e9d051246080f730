// Regression losses, with Kauldron's per-element values (kd.losses).
#include <memory>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/losses/loss.h"

namespace kd::losses {
namespace {

// Throws kd::TypeError when two tensors a loss compares cannot be compared element-wise.
void check_same_shape(const torch::Tensor& preds, const torch::Tensor& targets, const Path& p, const Path& t) {
  if (preds.sizes() != targets.sizes()) {
    throw TypeError("\"" + p.str() + "\" is " + describe_tensor(preds) + " but \"" + t.str() + "\" is " +
                    describe_tensor(targets) + ": the shapes must be equal");
  }
}

// The base of losses comparing `preds` with `targets` element by element.
class PairwiseLoss : public Loss {
 public:
  explicit PairwiseLoss(const config::Node& o) : Loss(o), preds_(key(o, "preds")), targets_(key(o, "targets")) {}

  torch::Tensor values(const train::Context& ctx) const override {
    const torch::Tensor preds = read(ctx, preds_);
    const torch::Tensor targets = read(ctx, targets_);
    check_same_shape(preds, targets, preds_, targets_);
    return elementwise(preds, targets.to(preds.scalar_type()));
  }

 protected:
  virtual torch::Tensor elementwise(const torch::Tensor& preds, const torch::Tensor& targets) const = 0;

 private:
  Path preds_, targets_;
};

// |preds - targets|
class L1 : public PairwiseLoss {
 public:
  using PairwiseLoss::PairwiseLoss;

 protected:
  torch::Tensor elementwise(const torch::Tensor& p, const torch::Tensor& t) const override { return (p - t).abs(); }
};

// (preds - targets)^2, as Kauldron's L2 (no 1/2 factor).
class L2 : public PairwiseLoss {
 public:
  using PairwiseLoss::PairwiseLoss;

 protected:
  torch::Tensor elementwise(const torch::Tensor& p, const torch::Tensor& t) const override { return (p - t).square(); }
};

// optax.huber_loss: 0.5 x^2 for |x| <= delta, else delta (|x| - delta / 2).
class Huber : public PairwiseLoss {
 public:
  explicit Huber(const config::Node& o) : PairwiseLoss(o), delta_(o.get_double("delta", 1.0)) {
    if (!(delta_ > 0)) throw ConfigError(o.where() + ": delta must be > 0, got " + std::to_string(delta_));
  }

 protected:
  torch::Tensor elementwise(const torch::Tensor& p, const torch::Tensor& t) const override {
    const torch::Tensor abs = (p - t).abs();
    // optax's form: quadratic part up to delta, linear beyond it; equal to the piecewise one.
    const torch::Tensor quadratic = abs.clamp_max(delta_);
    return 0.5 * quadratic.square() + delta_ * (abs - quadratic);
  }

 private:
  double delta_;
};

// The tensor at `values` as is (e.g. a loss the model computed itself).
class Value : public Loss {
 public:
  explicit Value(const config::Node& o) : Loss(o), values_(key(o, "values")) {}
  torch::Tensor values(const train::Context& ctx) const override { return read(ctx, values_); }

 private:
  Path values_;
};

class AbsoluteValue : public Loss {
 public:
  explicit AbsoluteValue(const config::Node& o) : Loss(o), values_(key(o, "values")) {}
  torch::Tensor values(const train::Context& ctx) const override { return read(ctx, values_).abs(); }

 private:
  Path values_;
};

// -cos(preds, targets) along the last axis; values have the shape without it. The norms are
// clamped to 1e-8 (optax's epsilon) so that a zero vector gives 0 rather than NaN.
class NegativeCosineSimilarity : public Loss {
 public:
  explicit NegativeCosineSimilarity(const config::Node& o)
      : Loss(o), preds_(key(o, "preds")), targets_(key(o, "targets")) {}

  torch::Tensor values(const train::Context& ctx) const override {
    const torch::Tensor preds = read(ctx, preds_);
    const torch::Tensor targets = read(ctx, targets_).to(preds.scalar_type());
    check_same_shape(preds, targets, preds_, targets_);
    if (preds.dim() == 0) throw TypeError("\"" + preds_.str() + "\" must have a last axis of vectors");
    const torch::Tensor dot = (preds * targets).sum(-1);
    const torch::Tensor norms = preds.norm(2, {-1}).clamp_min(1e-8) * targets.norm(2, {-1}).clamp_min(1e-8);
    return -(dot / norms);
  }

 private:
  Path preds_, targets_;
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_regression_losses(config::Registry<Loss>& r) {
  const std::string common = ", mask, normalize_by=mask, weight=1";
  r.add<L1>("L1", "|preds - targets|: preds, targets" + common);
  r.add<L2>("L2", "(preds - targets)^2: preds, targets" + common);
  r.add<Huber>("Huber", "optax.huber_loss(preds - targets): preds, targets, delta=1" + common);
  r.add<AbsoluteValue>("AbsoluteValue", "|values|: values" + common);
  r.add<Value>("Value", "values as is: values" + common);
  r.add<NegativeCosineSimilarity>("NegativeCosineSimilarity",
                                  "-cos(preds, targets) along the last axis: preds, targets" + common);
}

}  // namespace kd::losses
