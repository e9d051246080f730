// Metrics that wrap another metric: TreeMap, TreeReduce, SkipIfMissing. The inner metric is
// given as a nested config (`metric: {type: Norm, tensor: grads}`).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/metrics/metric.h"

namespace kd::metrics {
namespace {

MetricPtr create_inner(const config::Node& o) {
  if (!o.has("metric")) {
    throw ConfigError(o.where() +
                      ": missing the key \"metric\": the wrapped metric, e.g. "
                      "{type: Norm, tensor: grads}");
  }
  const config::Node inner = o.child("metric");
  if (!inner.is_map()) throw ConfigError(inner.where() + ": \"metric\" must be a map with a \"type\"");
  return registry().create(inner);
}

// A copy of `ctx` whose value at `path` is `value` (the field's tree rebuilt along the path).
train::Context with_value(const train::Context& ctx, const Path& path, const Tree& value) {
  if (path.empty() || path.front().kind != PathSegment::Kind::kKey || ctx.field(path.front().key) == nullptr) {
    throw ConfigError("cannot map over \"" + path.str() + "\": the path must start with a tree field of the context");
  }
  train::Context out = ctx;
  // `field` returns a pointer into `out`, which is ours to change.
  Tree* slot = const_cast<Tree*>(out.field(path.front().key));
  *slot = path.size() == 1 ? value : slot->set(path.drop_front(), value);
  return out;
}

// A path with its list indices written as dict keys, so that per-leaf values can be rebuilt
// into a tree of dicts ("layers[0].w" -> "layers.0.w").
Path as_keys(const Path& path) {
  std::vector<PathSegment> segments;
  for (const auto& s : path.segments()) {
    segments.push_back(s.kind == PathSegment::Kind::kIndex ? PathSegment::make_key(std::to_string(s.index)) : s);
  }
  return Path(std::move(segments));
}

// Runs the inner metric once per tensor leaf of the tree named by its first key. The other keys
// may name a tree of the same structure (their leaf at the same path is used) or a single tensor
// (used for every leaf).
class PerLeaf : public Metric {
 public:
  explicit PerLeaf(const config::Node& o) : inner_(create_inner(o)) {
    if (inner_->keys().empty()) throw ConfigError(o.where() + ": the wrapped metric reads no key");
    for (const auto& [name, path] : inner_->keys()) add_key(name, path);
  }

 protected:
  // (leaf path, inner state) for every tensor leaf, in tree order.
  std::vector<std::pair<Path, Tree>> leaf_states(const train::Context& ctx) const {
    const auto& keys = inner_->keys();
    std::vector<Tree> trees;
    for (const auto& [name, path] : keys) trees.push_back(ctx.get(path));
    std::vector<std::pair<Path, Tree>> out;
    for (const auto& [rel, leaf] : trees.front().flatten_paths()) {
      if (!leaf.is_tensor()) continue;
      train::Context leaf_ctx = ctx;
      for (std::size_t k = 0; k < keys.size(); ++k) {
        const Tree value = trees[k].is_leaf() ? trees[k] : trees[k].get(rel);
        leaf_ctx = with_value(leaf_ctx, keys[k].second, value);
      }
      out.emplace_back(rel, inner_->get_state(leaf_ctx));
    }
    return out;
  }

  MetricPtr inner_;
};

// One inner state and value per leaf: compute returns a tree of the per-leaf values with the
// tree's structure (list indices become dict keys). The state is a flat dict keyed by leaf path.
class TreeMap : public PerLeaf {
 public:
  using PerLeaf::PerLeaf;

  Tree get_state(const train::Context& ctx) const override {
    Tree state = Tree::dict();
    for (auto& [path, leaf_state] : leaf_states(ctx)) state.insert(as_keys(path).str(), std::move(leaf_state));
    return state;
  }

  Tree merge(const Tree& a, const Tree& b) const override {
    if (a.is_none()) return b;
    if (b.is_none()) return a;
    Tree out = Tree::dict();
    for (const auto& [k, sa] : a.items()) {
      const Tree* sb = b.find(k);
      out.insert(k, inner_->merge(sa, sb ? *sb : Tree()));
    }
    for (const auto& [k, sb] : b.items()) {
      if (!a.contains(std::string_view(k))) out.insert(k, sb);
    }
    return out;
  }

  Tree compute(const Tree& state) const override {
    if (state.is_none()) return Tree();
    Tree out;
    for (const auto& [k, leaf_state] : state.items()) {
      Tree value = inner_->compute(leaf_state);
      if (k.empty()) return value;  // the key named a single tensor
      out = out.set(Path::parse(k), std::move(value));
    }
    return out;
  }
};

// The per-leaf states merged into one with the inner merge (e.g. Norm averaged over leaves).
class TreeReduce : public PerLeaf {
 public:
  using PerLeaf::PerLeaf;

  Tree get_state(const train::Context& ctx) const override {
    Tree state;
    for (const auto& [path, leaf_state] : leaf_states(ctx)) state = inner_->merge(state, leaf_state);
    return state;
  }
  Tree merge(const Tree& a, const Tree& b) const override { return inner_->merge(a, b); }
  Tree compute(const Tree& state) const override { return inner_->compute(state); }
};

// The inner metric, or a none state on steps where one of its keys is missing from the context
// (e.g. a batch without labels).
class SkipIfMissing : public Metric {
 public:
  explicit SkipIfMissing(const config::Node& o) : inner_(create_inner(o)) {
    for (const auto& [name, path] : inner_->keys()) add_key(name, path);
  }

  Tree get_state(const train::Context& ctx) const override {
    for (const auto& [name, path] : inner_->keys()) {
      if (!present(ctx, path)) return Tree();
    }
    return inner_->get_state(ctx);
  }
  Tree merge(const Tree& a, const Tree& b) const override {
    if (a.is_none()) return b;
    if (b.is_none()) return a;
    return inner_->merge(a, b);
  }
  Tree compute(const Tree& state) const override { return state.is_none() ? Tree() : inner_->compute(state); }

 private:
  // A glob key is present when the part before its first glob is.
  static bool present(const train::Context& ctx, const Path& path) {
    if (!path.has_glob()) return ctx.contains(path);
    std::size_t n = 0;
    while (n < path.size() && !path[n].is_glob()) ++n;
    return n == 0 || ctx.contains(path.prefix(n));
  }

  MetricPtr inner_;
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_wrapper_metrics(config::Registry<Metric>& r) {
  r.add<TreeMap>("TreeMap", "the inner metric on each leaf of a tree, a value per leaf: metric");
  r.add<TreeReduce>("TreeReduce", "the inner metric on each leaf of a tree, merged into one value: metric");
  r.add<SkipIfMissing>("SkipIfMissing", "the inner metric, skipped on steps missing one of its keys: metric");
}

}  // namespace kd::metrics
