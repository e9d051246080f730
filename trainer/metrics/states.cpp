#include "trainer/metrics/states.h"

#include <limits>
#include <string>

#include "trainer/common/error.h"

namespace kd::metrics {
namespace {

// Concatenates two trees of the same structure leaf by leaf along dimension 0.
Tree concat_trees(const Tree& a, const Tree& b, const std::string& where) {
  if (a.is_tensor() && b.is_tensor()) return torch::cat({a.tensor(), b.tensor()}, 0);
  if (a.is_dict() && b.is_dict()) {
    if (a.keys() != b.keys()) {
      throw Error("cannot merge collected states: at \"" + where + "\" the keys differ (" + a.describe() + " vs " +
                  b.describe() + ")");
    }
    Tree out = Tree::dict();
    for (std::size_t i = 0; i < a.size(); ++i) {
      const std::string& k = a.keys()[i];
      out.insert(k, concat_trees(a.children()[i], b.children()[i], where.empty() ? k : where + "." + k));
    }
    return out;
  }
  if (a.is_list() && b.is_list() && a.size() == b.size()) {
    Tree out = Tree::list();
    for (std::size_t i = 0; i < a.size(); ++i) {
      out.push_back(concat_trees(a.children()[i], b.children()[i], where + "[" + std::to_string(i) + "]"));
    }
    return out;
  }
  throw Error("cannot merge collected states: at \"" + where + "\" one holds " + a.describe() + " and the other " +
              b.describe() + " (both must be trees of tensors of the same structure)");
}

}  // namespace

Tree AverageState::make(const torch::Tensor& total, const torch::Tensor& count) {
  return Tree::dict({{"total", total}, {"count", count}});
}

Tree AverageState::make(const torch::Tensor& total, int64_t count) {
  return Tree::dict({{"total", total}, {"count", count}});
}

Tree AverageState::make(const torch::Tensor& total, Tree count) {
  return Tree::dict({{"total", total}, {"count", std::move(count)}});
}

Tree AverageState::make_mean(const torch::Tensor& mean, int64_t count) {
  return Tree::dict({{"mean", mean}, {"count", count}});
}

namespace {

// Counts are integers when known without looking at the data (no tensor, no allocation when
// merged), and tensors when they depend on it (e.g. a mask's sum).
Tree add_counts(const Tree& a, const Tree& b) {
  if (a.kind() == Tree::Kind::kInt && b.kind() == Tree::Kind::kInt) return Tree(a.to_int() + b.to_int());
  const auto as_tensor = [](const Tree& c) {
    return c.is_tensor() ? c.tensor() : torch::scalar_tensor(c.to_double(), torch::kDouble);
  };
  return Tree(as_tensor(a) + as_tensor(b));
}

}  // namespace

torch::Tensor AverageState::total(const Tree& state) {
  const Tree* mean = state.find("mean");
  if (!mean) return state.at("total").tensor();
  const Tree& count = state.at("count");
  return count.is_tensor() ? mean->tensor() * count.tensor() : mean->tensor() * count.to_double();
}

Tree AverageState::merge(const Tree& a, const Tree& b) {
  if (a.is_none()) return b;
  if (b.is_none()) return a;
  torch::Tensor total;
  const Tree* b_mean = b.find("mean");
  if (b_mean && !b.at("count").is_tensor()) {
    total = at::add(AverageState::total(a), b_mean->tensor(), b.at("count").to_double());  // a + mean * count
  } else {
    total = AverageState::total(a) + AverageState::total(b);
  }
  return Tree::dict({{"total", std::move(total)}, {"count", add_counts(a.at("count"), b.at("count"))}});
}

torch::Tensor AverageState::compute(const Tree& state) {
  // Nothing was merged (e.g. an empty eval set): there is no average to report.
  if (state.is_none()) return torch::full({}, std::numeric_limits<double>::quiet_NaN());
  if (const Tree* mean = state.find("mean")) return mean->tensor();
  const Tree& count = state.at("count");
  torch::Tensor total = state.at("total").tensor();
  if (!total.is_floating_point()) total = total.to(torch::kDouble);  // e.g. counts of correct answers
  return count.is_tensor() ? total / count.tensor() : total / count.to_double();
}

Tree CollectingState::merge(const Tree& a, const Tree& b) {
  if (a.is_none()) return b;
  if (b.is_none()) return a;
  return concat_trees(a, b, "");
}

Tree CollectFirstState::merge(const Tree& a, const Tree& b, int64_t num) {
  const Tree merged = CollectingState::merge(a, b);
  return merged.map([num](const torch::Tensor& t) { return t.dim() > 0 && t.size(0) > num ? t.narrow(0, 0, num) : t; });
}

}  // namespace kd::metrics
