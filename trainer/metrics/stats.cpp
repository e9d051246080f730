// Statistics of tensors: Norm, Std, SingleDimension.
#include <memory>

#include "trainer/common/error.h"
#include "trainer/metrics/metric.h"
#include "trainer/train/context.h"

namespace kd::metrics {
namespace {

// The L2 norm of the tensor at `tensor`, or the global norm of all tensor leaves when the path
// names a tree (e.g. "grads"); averaged over steps.
class Norm : public AverageMetric {
 public:
  explicit Norm(const config::Node& o) : tensor_(key(o, "tensor")) {
    const std::string aggregation = o.get_string("aggregation_type", "average");
    if (aggregation != "average") {
      throw ConfigError(o.where() + ": aggregation_type must be \"average\", got \"" + aggregation +
                        "\"");
    }
  }

  Tree get_state(const train::Context& ctx) const override {
    const Tree value = ctx.get(tensor_);
    torch::Tensor squares;
    for (const auto& [path, leaf] : value.flatten()) {
      if (!leaf.is_tensor()) continue;
      const torch::Tensor t = leaf.tensor().detach();
      // Sum the squares in at least float32 so half-precision leaves do not overflow.
      const torch::Tensor s =
          t.to(torch::promote_types(t.scalar_type(), torch::kFloat)).square().sum();
      squares = squares.defined() ? squares + s : s;
    }
    if (!squares.defined()) {
      throw TypeError("Norm: \"" + tensor_.str() + "\" holds no tensor (" + value.describe() + ")");
    }
    return AverageState::make(squares.sqrt(), torch::ones({}, squares.options()));
  }

 private:
  Path tensor_;
};

// The standard deviation of all elements seen, merged exactly: the state keeps the sum, the sum
// of squares and the count (in float64, which keeps E[x^2] - E[x]^2 accurate enough).
class Std : public Metric {
 public:
  explicit Std(const config::Node& o) : values_(key(o, "values")) {}

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor x = read(ctx, values_).detach().to(torch::kDouble);
    return Tree::dict(
        {{"sum", x.sum()},
         {"sum_of_squares", x.square().sum()},
         {"count", torch::scalar_tensor(static_cast<double>(x.numel()), x.options())}});
  }

  Tree merge(const Tree& a, const Tree& b) const override {
    if (a.is_none()) return b;
    if (b.is_none()) return a;
    Tree out = Tree::dict();
    for (const char* k : {"sum", "sum_of_squares", "count"})
      out.insert(k, a.at(k).tensor() + b.at(k).tensor());
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
  explicit SingleDimension(const config::Node& o)
      : tensor_(key(o, "tensor")), index_(o.get_int("index")) {}

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor t = read(ctx, tensor_).detach();
    if (t.dim() == 0 || index_ >= t.size(-1) || index_ < -t.size(-1)) {
      throw TypeError("SingleDimension: index " + std::to_string(index_) +
                      " is out of range of the last axis of \"" + tensor_.str() + "\" (" +
                      describe_tensor(t) + ")");
    }
    const torch::Tensor x =
        t.select(-1, index_).to(torch::promote_types(t.scalar_type(), torch::kFloat));
    return AverageState::make(x.sum(),
                              torch::scalar_tensor(static_cast<double>(x.numel()), x.options()));
  }

 private:
  Path tensor_;
  int64_t index_;
};

template <typename T>
void add(config::Registry<Metric>& r, const std::string& name, std::string doc) {
  r.add(
      name, [](const config::Node& o) { return std::make_shared<T>(o); }, std::move(doc));
}

}  // namespace

// Called once by registry() (registry.cpp).
void add_stats_metrics(config::Registry<Metric>& r) {
  add<Norm>(
      r, "Norm",
      "L2 norm (global norm of a tree), averaged over steps: tensor, aggregation_type=average");
  add<Std>(r, "Std", "standard deviation of all elements: values");
  add<SingleDimension>(r, "SingleDimension", "mean of tensor[..., index]: tensor, index");
}

}  // namespace kd::metrics
