// Classification losses (Kauldron's kd.losses); values are per example.
#include <memory>
#include <optional>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/losses/loss.h"

namespace kd::losses {
namespace {

// -sum(labels * log_softmax(logits)) over the last axis; labels are one-hot or probabilities.
class SoftmaxCrossEntropy : public Loss {
 public:
  explicit SoftmaxCrossEntropy(const config::Node& o)
      : Loss(o), logits_(key(o, "logits", "preds.logits")), labels_(key(o, "labels", "batch.label")) {}

  torch::Tensor values(const train::Context& ctx) const override {
    const torch::Tensor logits = read(ctx, logits_);
    const torch::Tensor labels = read(ctx, labels_);
    if (logits.dim() == 0 || labels.sizes() != logits.sizes()) {
      throw TypeError(
          "SoftmaxCrossEntropy needs logits [..., C] and labels of the same shape (one-hot "
          "or probabilities), but \"" +
          logits_.str() + "\" is " + describe_tensor(logits) + " and \"" + labels_.str() + "\" is " +
          describe_tensor(labels) + " (integer labels: use SoftmaxCrossEntropyWithIntLabels)");
    }
    return -(labels.to(logits.scalar_type()) * torch::log_softmax(logits, -1)).sum(-1);
  }

 private:
  Path logits_, labels_;
};

// -log_softmax(logits)[label]; logits [..., C], integer labels [...] or [..., 1]. A label outside
// [0, C) is an error unless it equals `ignore_index` (PyTorch's name; no default, where
// PyTorch skips -100 silently): such elements are left out of the loss and of its count.
class SoftmaxCrossEntropyWithIntLabels : public Loss {
 public:
  explicit SoftmaxCrossEntropyWithIntLabels(const config::Node& o)
      : Loss(o), logits_(key(o, "logits", "preds.logits")), labels_(key(o, "labels", "batch.label")) {
    if (auto ignore = o.find("ignore_index"); ignore && !ignore->is_null()) ignore_index_ = ignore->as_int();
  }

  torch::Tensor values(const train::Context& ctx) const override {
    const torch::Tensor logits = read(ctx, logits_);
    torch::Tensor labels = checked_labels(ctx, logits);
    if (ignore_index_) labels = labels.masked_fill(labels.eq(*ignore_index_), 0);  // counted out by own_mask
    return -torch::log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1);
  }

  // Unmasked: one fused op, as a hand-written loop would use.
  Mean mean_value(const train::Context& ctx) const override {
    const torch::Tensor logits = read(ctx, logits_);
    const torch::Tensor labels = checked_labels(ctx, logits);
    return {torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1})),
            labels.numel()};
  }

 protected:
  torch::Tensor own_mask(const train::Context& ctx) const override {
    if (!ignore_index_) return {};
    torch::Tensor labels = read(ctx, labels_);
    if (labels.dim() >= 1 && labels.size(-1) == 1) {
      const torch::Tensor logits = read(ctx, logits_);
      if (labels.dim() == logits.dim()) labels = labels.squeeze(-1);
    }
    return labels.ne(*ignore_index_);
  }

 private:
  // Integer class indices in [0, C) (or ignore_index) with the shape of logits minus its last
  // dimension.
  torch::Tensor checked_labels(const train::Context& ctx, const torch::Tensor& logits) const {
    torch::Tensor labels = read(ctx, labels_);
    if (labels.is_floating_point() || labels.is_complex() || labels.scalar_type() == torch::kBool) {
      throw TypeError("\"" + labels_.str() + "\" must hold integer class indices, but it is " +
                      describe_tensor(labels));
    }
    if (logits.dim() >= 1 && labels.dim() == logits.dim() && labels.size(-1) == 1) labels = labels.squeeze(-1);
    if (logits.dim() == 0 || labels.sizes() != logits.sizes().slice(0, logits.dim() - 1)) {
      throw TypeError(
          "SoftmaxCrossEntropyWithIntLabels needs logits [..., C] and labels [...] or "
          "[..., 1], but \"" +
          logits_.str() + "\" is " + describe_tensor(logits) + " and \"" + labels_.str() + "\" is " +
          describe_tensor(labels));
    }
    check_class_indices(labels, logits.size(-1), ignore_index_, labels_);
    return labels.scalar_type() == torch::kLong ? labels : labels.to(torch::kLong);
  }

  Path logits_, labels_;
  std::optional<int64_t> ignore_index_;
};

// optax.sigmoid_binary_cross_entropy, element-wise; labels in [0, 1].
class SigmoidBinaryCrossEntropy : public Loss {
 public:
  explicit SigmoidBinaryCrossEntropy(const config::Node& o)
      : Loss(o), logits_(key(o, "logits", "preds.logits")), labels_(key(o, "labels", "batch.label")) {}

  torch::Tensor values(const train::Context& ctx) const override {
    const torch::Tensor logits = read(ctx, logits_);
    const torch::Tensor labels = read(ctx, labels_).to(logits.scalar_type());
    if (labels.sizes() != logits.sizes()) {
      throw TypeError("SigmoidBinaryCrossEntropy needs labels of the logits' shape, but \"" + logits_.str() + "\" is " +
                      describe_tensor(logits) + " and \"" + labels_.str() + "\" is " + describe_tensor(labels));
    }
    // log_sigmoid is stable for large |logits|, unlike log(sigmoid(x)).
    return -(labels * torch::log_sigmoid(logits) + (1 - labels) * torch::log_sigmoid(-logits));
  }

 private:
  Path logits_, labels_;
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_classification_losses(config::Registry<Loss>& r) {
  const std::string common = ", mask, normalize_by=mask, weight=1";
  r.add<SoftmaxCrossEntropy>("SoftmaxCrossEntropy",
                             "one-hot/probability labels: logits=preds.logits, labels=batch.label" + common);
  r.add<SoftmaxCrossEntropyWithIntLabels>(
      "SoftmaxCrossEntropyWithIntLabels",
      "integer labels [B] or [B, 1]: logits=preds.logits, labels=batch.label, ignore_index" + common);
  r.add<SigmoidBinaryCrossEntropy>("SigmoidBinaryCrossEntropy",
                                   "labels in [0, 1]: logits=preds.logits, labels=batch.label" + common);
}

}  // namespace kd::losses
