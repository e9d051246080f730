// Classification metrics (Kauldron's kd.metrics): Accuracy, BitsPerToken, BinaryAccuracy, Precision1, RocAuc.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/metrics/metric.h"

namespace kd::metrics {
namespace {

// The fraction of `hits` (bool, one per element) that are true, among the masked-in elements
// when a mask key is given: an exact AverageState over batches.
// `counted` (bool, hits' shape), when defined, leaves out the elements where it is false.
Tree hit_rate(const torch::Tensor& hits, const std::optional<Path>& mask_key, const train::Context& ctx,
              const torch::Tensor& counted = {}) {
  if (!mask_key && !counted.defined()) return AverageState::make(hits.sum(), hits.numel());
  torch::Tensor mask =
      mask_key ? train::Auxiliary::read_mask(ctx, *mask_key, hits) : torch::ones_like(hits, torch::kFloat);
  if (counted.defined()) mask = mask * counted.to(mask.scalar_type());
  // In float64: merged over many batches, float32 sums are exact only up to 2^24.
  return AverageState::make((hits * mask).sum(torch::kDouble), mask.sum(torch::kDouble));
}

// Class indices [...] from labels that are indices [...] / [..., 1] (each in [0, C) or `ignore`),
// or one-hot [..., C].
torch::Tensor class_indices(const torch::Tensor& logits, const torch::Tensor& labels, const Path& logits_path,
                            const Path& labels_path, std::optional<int64_t> ignore) {
  torch::Tensor out = labels;
  bool indices = true;
  if (logits.dim() >= 1 && out.dim() == logits.dim()) {
    if (out.sizes() == logits.sizes() && logits.size(-1) > 1) {
      out = out.argmax(-1);  // one-hot
      indices = false;
    } else if (out.size(-1) == 1) {
      out = out.squeeze(-1);
    }
  }
  if (logits.dim() == 0 || out.sizes() != logits.sizes().slice(0, logits.dim() - 1)) {
    throw TypeError("needs logits [..., C] and labels [...], [..., 1] or one-hot [..., C], but \"" + logits_path.str() +
                    "\" is " + describe_tensor(logits) + " and \"" + labels_path.str() + "\" is " +
                    describe_tensor(labels));
  }
  if (indices && !out.is_floating_point())
    train::Auxiliary::check_class_indices(out, logits.size(-1), ignore, labels_path);
  return out.to(torch::kLong);
}

// The keys shared by the classification metrics: logits, labels and an optional mask.
class LabeledMetric : public AverageMetric {
 protected:
  explicit LabeledMetric(const config::Node& o)
      : logits_(key(o, "logits", "preds.logits")),
        labels_(key(o, "labels", "batch.label")),
        mask_(optional_key(o, "mask")) {}

  Path logits_, labels_;
  std::optional<Path> mask_;
};

// The fraction of examples whose arg-max logit is the label; exact over batches since the state
// keeps the count of correct examples and of examples.
class Accuracy : public LabeledMetric {
 public:
  explicit Accuracy(const config::Node& o) : LabeledMetric(o) {
    if (auto ignore = o.find("ignore_index"); ignore && !ignore->is_null()) ignore_index_ = ignore->as_int();
  }

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor logits = read(ctx, logits_).detach();
    const torch::Tensor labels = class_indices(logits, read(ctx, labels_), logits_, labels_, ignore_index_);
    return hit_rate(logits.argmax(-1) == labels, mask_, ctx,
                    ignore_index_ ? labels.ne(*ignore_index_) : torch::Tensor());
  }

 private:
  std::optional<int64_t> ignore_index_;  // labels left out (PyTorch's ignore_index); none by default
};

// The mean cross-entropy of the labels under softmax(logits) in bits (nats / ln 2): per token of
// a language model, per byte for a byte-level one (bits per byte, as compression results are
// given); exact over batches (the state sums in float64).
class BitsPerToken : public LabeledMetric {
 public:
  explicit BitsPerToken(const config::Node& o) : LabeledMetric(o) {
    if (auto ignore = o.find("ignore_index"); ignore && !ignore->is_null()) ignore_index_ = ignore->as_int();
  }

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor logits = read(ctx, logits_).detach();
    const torch::Tensor labels = class_indices(logits, read(ctx, labels_), logits_, labels_, ignore_index_);
    const torch::Tensor counted = ignore_index_ ? labels.ne(*ignore_index_) : torch::ones_like(labels, torch::kBool);
    const torch::Tensor safe = labels.masked_fill(counted.logical_not(), 0);
    // log-sum-exp minus the label's logit: no [..., C] tensor beyond the logits (a GPT-2 batch's
    // are gigabytes), in float32 at least, then float64 for the sums.
    const torch::Tensor x =
        logits.is_floating_point() && logits.element_size() >= 4 ? logits : logits.to(torch::kFloat);
    const torch::Tensor nats =
        (torch::logsumexp(x, -1) - x.gather(-1, safe.unsqueeze(-1)).squeeze(-1)).to(torch::kDouble);
    torch::Tensor weight = counted.to(torch::kDouble);
    if (mask_) weight = weight * train::Auxiliary::read_mask(ctx, *mask_, nats).to(torch::kDouble);
    return AverageState::make((nats * weight).sum() / std::log(2.0), weight.sum());
  }

 private:
  std::optional<int64_t> ignore_index_;
};

// The fraction of elements where (logit > 0) == (label > 0.5).
class BinaryAccuracy : public LabeledMetric {
 public:
  explicit BinaryAccuracy(const config::Node& o) : LabeledMetric(o) {}

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor logits = read(ctx, logits_).detach();
    const torch::Tensor labels = read(ctx, labels_);
    if (labels.numel() != logits.numel()) {
      throw TypeError("BinaryAccuracy needs one label per logit, but \"" + logits_.str() + "\" is " +
                      describe_tensor(logits) + " and \"" + labels_.str() + "\" is " + describe_tensor(labels));
    }
    return hit_rate((logits > 0) == (labels.reshape(logits.sizes()).to(torch::kFloat) > 0.5), mask_, ctx);
  }
};

// Precision@1 with multi-hot labels: the fraction of examples whose arg-max class is positive.
class Precision1 : public LabeledMetric {
 public:
  explicit Precision1(const config::Node& o) : LabeledMetric(o) {}

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor logits = read(ctx, logits_).detach();
    const torch::Tensor labels = read(ctx, labels_);
    if (logits.dim() == 0 || labels.sizes() != logits.sizes()) {
      throw TypeError("Precision1 needs logits [..., C] and multi-hot labels of the same shape, but \"" +
                      logits_.str() + "\" is " + describe_tensor(logits) + " and \"" + labels_.str() + "\" is " +
                      describe_tensor(labels));
    }
    const torch::Tensor top = logits.argmax(-1, /*keepdim=*/true);
    return hit_rate(labels.gather(-1, top).squeeze(-1).to(torch::kFloat) > 0, mask_, ctx);
  }
};

// The exact binary ROC AUC (Mann-Whitney U, ties counted as one half through average ranks), or
// NaN when there is no positive or no negative.
double binary_auc(const std::vector<double>& scores, const std::vector<bool>& positive) {
  const std::size_t n = scores.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
  double rank_sum = 0;  // the sum of the (1-based, tie-averaged) ranks of the positives
  double num_pos = 0;
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i;
    while (j < n && scores[order[j]] == scores[order[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(i + 1 + j);  // the mean of ranks i+1 .. j
    for (std::size_t k = i; k < j; ++k) {
      if (positive[order[k]]) {
        rank_sum += rank;
        num_pos += 1;
      }
    }
    i = j;
  }
  const double num_neg = static_cast<double>(n) - num_pos;
  if (num_pos == 0 || num_neg == 0) return std::numeric_limits<double>::quiet_NaN();
  return (rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg);
}

std::vector<double> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// ROC AUC over the whole dataset, as Kauldron's RocAuc (masked-out rows dropped):
// - logits [B, C], C > 1, labels class indices [B] / [B, 1]: softmax over the classes, then only
//   the classes present among the labels are kept and their probabilities renormalised; the
//   mean over those classes of the AUC of class c against the rest (sklearn's one-vs-rest
//   "macro" average; with two classes present, the binary AUC).
// - scores [B] or [B, 1] with labels in {0, 1}: the binary AUC.
// - multi-hot labels [B, C]: the mean over classes of the per-class AUC of the softmax
//   probabilities, over the classes that have a positive and a negative.
// With only one class present there is no AUC; as Kauldron, the value is 0.
class RocAuc : public CollectingMetric {
 public:
  explicit RocAuc(const config::Node& o)
      : logits_(key(o, "logits", "preds.logits")),
        labels_(key(o, "labels", "batch.label")),
        mask_(optional_key(o, "mask")) {}

  Tree get_state(const train::Context& ctx) const override {
    torch::Tensor logits = read(ctx, logits_).detach();
    torch::Tensor labels = read(ctx, labels_).detach();
    if (logits.dim() == 0) logits = logits.reshape({1});
    if (labels.dim() == 0) labels = labels.reshape({1});
    if (labels.size(0) != logits.size(0)) {
      throw TypeError("RocAuc needs one label row per logit row, but \"" + logits_.str() + "\" is " +
                      describe_tensor(logits) + " and \"" + labels_.str() + "\" is " + describe_tensor(labels));
    }
    Tree state = Tree::dict({{"logits", logits}, {"labels", labels}});
    if (mask_) {
      const torch::Tensor rows = torch::empty({logits.size(0)}, logits.options());
      state.insert("mask", read_mask(ctx, *mask_, rows).detach().to(torch::kFloat));
    }
    return state;
  }

  Tree compute(const Tree& state) const override {
    if (state.is_none()) return torch::full({}, std::numeric_limits<double>::quiet_NaN(), torch::kDouble);
    torch::Tensor logits = state.at("logits").tensor().to(torch::kCPU, torch::kDouble);
    torch::Tensor labels = state.at("labels").tensor().to(torch::kCPU);
    if (const Tree* mask = state.find("mask")) {
      const torch::Tensor keep = mask->tensor().to(torch::kCPU) > 0;
      logits = logits.index({keep});
      labels = labels.index({keep});
    }
    const int64_t b = logits.size(0);
    const bool binary = logits.numel() == b;
    if (binary) {
      std::vector<bool> positive;
      for (double v : to_vector(labels.reshape({b}))) positive.push_back(v > 0.5);
      if (std::adjacent_find(positive.begin(), positive.end(), std::not_equal_to<>()) == positive.end())
        return torch::scalar_tensor(0.0, torch::kDouble);  // one class only (or no rows)
      return torch::scalar_tensor(binary_auc(to_vector(logits.reshape({b})), positive), torch::kDouble);
    }
    logits = logits.reshape({b, -1});
    const int64_t c = logits.size(1);
    torch::Tensor probs = torch::softmax(logits, -1);
    torch::Tensor positives;  // bool [B, C]
    if (labels.dim() == 2 && labels.size(1) == c && c > 1) {
      positives = labels.to(torch::kDouble) > 0.5;
    } else if (labels.numel() == b) {
      const torch::Tensor indices = labels.reshape({b}).to(torch::kLong);
      if (b > 0 && (indices.min().item<int64_t>() < 0 || indices.max().item<int64_t>() >= c)) {
        throw TypeError("RocAuc: the labels must be class indices in [0, " + std::to_string(c) + "), but \"" +
                        labels_.str() + "\" holds " + std::to_string(indices.min().item<int64_t>()) + ".." +
                        std::to_string(indices.max().item<int64_t>()));
      }
      // Only the classes present, their probabilities renormalised.
      const torch::Tensor present = (torch::bincount(indices, {}, c) > 0).nonzero().squeeze(1);
      if (present.numel() < 2) return torch::scalar_tensor(0.0, torch::kDouble);
      probs = probs.index_select(1, present);
      probs = probs / probs.sum(-1, /*keepdim=*/true);
      positives = indices.unsqueeze(1) == present.unsqueeze(0);
    } else {
      throw TypeError("RocAuc: logits [B, C] need labels [B], [B, 1] or multi-hot [B, C], got " +
                      describe_tensor(labels));
    }
    double sum = 0;
    int64_t used = 0;
    for (int64_t k = 0; k < positives.size(1); ++k) {
      std::vector<bool> positive;
      for (double v : to_vector(positives.select(1, k))) positive.push_back(v > 0.5);
      const double auc = binary_auc(to_vector(probs.select(1, k)), positive);
      if (!std::isnan(auc)) {
        sum += auc;
        ++used;
      }
    }
    const double mean = used ? sum / static_cast<double>(used) : 0.0;
    return torch::scalar_tensor(mean, torch::kDouble);
  }

 private:
  Path logits_, labels_;
  std::optional<Path> mask_;
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_classification_metrics(config::Registry<Metric>& r) {
  r.add<Accuracy>("Accuracy", "arg-max accuracy: logits=preds.logits, labels=batch.label, mask, ignore_index");
  r.add<BitsPerToken>("BitsPerToken",
                      "mean cross-entropy in bits (bits per byte for byte tokens): logits=preds.logits, "
                      "labels=batch.label, mask, ignore_index");
  r.add<BinaryAccuracy>("BinaryAccuracy",
                        "(logit > 0) == (label > 0.5): logits=preds.logits, labels=batch.label, mask");
  r.add<Precision1>("Precision1", "precision@1, multi-hot labels: logits=preds.logits, labels=batch.label, mask");
  r.add<RocAuc>("RocAuc",
                "exact ROC AUC, as Kauldron (one-vs-rest mean over the classes present, probabilities "
                "renormalised over them; 0 with one class): logits=preds.logits, labels=batch.label, mask");
}

}  // namespace kd::metrics
