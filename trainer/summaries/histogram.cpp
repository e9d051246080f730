// Histogram: the distribution of the values of a tensor, or of every leaf of a tree or a glob.
#include <memory>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/summaries/summary.h"

namespace kd::summaries {
namespace {

class Histogram : public Summary {
 public:
  explicit Histogram(const config::Node& o) : tensor_(key(o, "tensor")), num_buckets_(o.get_int("num_buckets", 30)) {
    if (num_buckets_ < 1) throw ConfigError(o.where() + ": num_buckets must be >= 1");
  }

  Kind kind() const override { return Kind::kHistogram; }

  // All values of every tensor leaf, flattened into one float32 vector.
  Tree get_state(const train::Context& ctx) const override {
    std::vector<torch::Tensor> parts;
    auto collect = [&](const Tree& tree) {
      for (const auto& [path, leaf] : tree.flatten()) {
        if (leaf.is_tensor()) parts.push_back(leaf.tensor().detach().reshape({-1}).to(torch::kFloat));
      }
    };
    if (tensor_.has_glob()) {
      for (const auto& [path, node] : ctx.glob(tensor_)) collect(node);
    } else {
      collect(ctx.get(tensor_));
    }
    if (parts.empty()) return torch::zeros({0}, torch::kFloat);
    return torch::cat(parts);
  }

  Tree merge(const Tree& a, const Tree& b) const override { return metrics::CollectingState::merge(a, b); }

  // Equal-width buckets over [min, max] of the values (the last bucket includes max); a single
  // distinct value v gets the range [v - 0.5, v + 0.5].
  Tree compute(const Tree& state) const override {
    if (state.is_none()) return Tree();
    const torch::Tensor values = state.tensor().to(torch::kDouble);
    double lo = 0.0, hi = 1.0;
    if (values.numel() > 0) {
      lo = values.min().item<double>();
      hi = values.max().item<double>();
      if (lo == hi) {
        lo -= 0.5;
        hi += 0.5;
      }
    }
    const torch::Tensor counts = values.numel() > 0 ? torch::histc(values, num_buckets_, lo, hi).to(torch::kCPU)
                                                    : torch::zeros({num_buckets_}, torch::kDouble);
    const torch::Tensor edges = torch::linspace(lo, hi, num_buckets_ + 1, torch::kDouble);
    return Tree::dict({{"counts", counts}, {"edges", edges}});
  }

 private:
  Path tensor_;
  int64_t num_buckets_;
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_histogram_summaries(config::Registry<Summary>& r) {
  r.add(
      "Histogram", [](const config::Node& o) { return std::make_shared<Histogram>(o); },
      "values of a tensor, a tree or a glob (e.g. grads.**): tensor, num_buckets=30");
}

}  // namespace kd::summaries
