// Statistics of tensors: Norm, Std, SingleDimension.
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/metrics/metric.h"

namespace kd::metrics {
namespace {

// Kauldron's Norm: the norm of the tensor at `tensor` over `axis` (default -1: one norm per row),
// averaged over the other axes, masked-in rows and steps. `axis: null` takes the norm of the
// whole tensor; a path that names a tree (e.g. "grads") gives its global norm (axis left out or
// null). `ord`: the vector norm's order (default 2; inf, -inf, 0, any number), or "fro" (2).
//   {type: Norm, tensor: preds.embedding}               # mean L2 norm of the embeddings
//   {type: Norm, tensor: grads, axis: null}             # the global gradient norm
class Norm : public AverageMetric {
 public:
  explicit Norm(const config::Node& o) : tensor_(key(o, "tensor")), mask_(optional_key(o, "mask")) {
    const std::string aggregation = o.get_string("aggregation_type", "average");
    if (aggregation != "average") {
      throw ConfigError(o.where() + ": aggregation_type must be \"average\", got \"" + aggregation + "\"");
    }
    if (auto axis = o.find("axis")) {
      axis_given_ = true;
      if (axis->is_null()) {
        axis_.reset();
      } else if (axis->is_sequence()) {
        axis_ = o.get_int_list("axis");
        if (axis_->empty()) throw ConfigError(axis->where() + ": axis must be an integer, a list of integers or null");
      } else {
        axis_ = std::vector<int64_t>{axis->as_int()};
      }
    }
    if (auto ord = o.find("ord"); ord && !ord->is_null()) {
      const std::string text = ord->as_string();
      if (text == "fro") {
        ord_ = 2;
      } else if (text == "inf" || text == ".inf") {
        ord_ = std::numeric_limits<double>::infinity();
      } else if (text == "-inf" || text == "-.inf") {
        ord_ = -std::numeric_limits<double>::infinity();
      } else {
        ord_ = ord->as_double();
      }
    }
  }

  Tree get_state(const train::Context& ctx) const override {
    const Tree value = ctx.get(tensor_);
    if (!value.is_tensor()) return tree_norm(value);
    const torch::Tensor t = value.tensor().detach();
    // In at least float32, so that half-precision values do not overflow.
    const torch::Tensor x = t.to(torch::promote_types(t.scalar_type(), torch::kFloat));
    if (!axis_ || x.dim() == 0) return AverageState::make(norm(x.reshape({-1}), {0}).reshape({}), int64_t{1});
    for (int64_t a : *axis_) {
      if (a >= x.dim() || a < -x.dim()) {
        throw TypeError("Norm: axis " + std::to_string(a) + " is out of range of \"" + tensor_.str() + "\" (" +
                        describe_tensor(t) + ")");
      }
    }
    const torch::Tensor norms = norm(x, *axis_);  // keepdim: the mask broadcasts against it
    if (!mask_) return AverageState::make(norms.sum(), norms.numel());
    const torch::Tensor mask = read_mask(ctx, *mask_, norms);
    return AverageState::make((norms * mask).sum(), mask.sum(torch::kDouble));
  }

 private:
  torch::Tensor norm(const torch::Tensor& x, const std::vector<int64_t>& axis) const {
    return at::linalg_vector_norm(x, ord_, axis, /*keepdim=*/true);
  }

  // The global norm of every tensor leaf of a tree.
  Tree tree_norm(const Tree& value) const {
    if (axis_given_ && axis_) {
      throw ConfigError("Norm: \"" + tensor_.str() + "\" is a tree (" + value.describe() +
                        "); its global norm needs axis: null (or no axis); for one norm per leaf use "
                        "{type: TreeMap, metric: {type: Norm, ...}}");
    }
    std::vector<torch::Tensor> norms;
    for (const auto& [path, leaf] : value.flatten()) {
      if (!leaf.is_tensor()) continue;
      const torch::Tensor t = leaf.tensor().detach();
      norms.push_back(norm(t.to(torch::promote_types(t.scalar_type(), torch::kFloat)).reshape({-1}), {0}).reshape({}));
    }
    if (norms.empty()) throw TypeError("Norm: \"" + tensor_.str() + "\" holds no tensor (" + value.describe() + ")");
    return AverageState::make(norm(torch::stack(norms), {0}).reshape({}), int64_t{1});
  }

  Path tensor_;
  std::optional<Path> mask_;
  std::optional<std::vector<int64_t>> axis_ = std::vector<int64_t>{-1};
  bool axis_given_ = false;
  double ord_ = 2;
};

// The standard deviation of all elements seen, merged exactly: the state keeps the sum, the sum
// of squares and the count (in float64, which keeps E[x^2] - E[x]^2 accurate enough).
class Std : public Metric {
 public:
  explicit Std(const config::Node& o) : values_(key(o, "values")) {}

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor x = read(ctx, values_).detach().to(torch::kDouble);
    return Tree::dict({{"sum", x.sum()},
                       {"sum_of_squares", x.square().sum()},
                       {"count", torch::scalar_tensor(static_cast<double>(x.numel()), x.options())}});
  }

  Tree merge(const Tree& a, const Tree& b) const override {
    if (a.is_none()) return b;
    if (b.is_none()) return a;
    Tree out = Tree::dict();
    for (const char* k : {"sum", "sum_of_squares", "count"}) out.insert(k, a.at(k).tensor() + b.at(k).tensor());
    return out;
  }

  Tree compute(const Tree& state) const override {
    if (state.is_none()) return AverageState::compute(state);
    const torch::Tensor count = state.at("count").tensor();
    const torch::Tensor mean = state.at("sum").tensor() / count;
    const torch::Tensor mean_square = state.at("sum_of_squares").tensor() / count;
    return (mean_square - mean.square()).clamp_min(0).sqrt();
  }

 private:
  Path values_;
};

// The mean of tensor[..., index] (e.g. one coordinate of a prediction).
class SingleDimension : public AverageMetric {
 public:
  explicit SingleDimension(const config::Node& o) : tensor_(key(o, "tensor")), index_(o.get_int("index")) {}

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor t = read(ctx, tensor_).detach();
    if (t.dim() == 0 || index_ >= t.size(-1) || index_ < -t.size(-1)) {
      throw TypeError("SingleDimension: index " + std::to_string(index_) + " is out of range of the last axis of \"" +
                      tensor_.str() + "\" (" + describe_tensor(t) + ")");
    }
    const torch::Tensor x = t.select(-1, index_).to(torch::promote_types(t.scalar_type(), torch::kFloat));
    return AverageState::make(x.sum(), torch::scalar_tensor(static_cast<double>(x.numel()), x.options()));
  }

 private:
  Path tensor_;
  int64_t index_;
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_stats_metrics(config::Registry<Metric>& r) {
  r.add<Norm>("Norm",
              "mean norm over axis (default -1: per row; null: whole tensor; a tree: its global norm): "
              "tensor, axis=-1, ord=2, mask, aggregation_type=average");
  r.add<Std>("Std", "standard deviation of all elements: values");
  r.add<SingleDimension>("SingleDimension", "mean of tensor[..., index]: tensor, index");
}

}  // namespace kd::metrics
