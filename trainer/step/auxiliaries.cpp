#include "trainer/step/auxiliaries.h"

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/context/error_context.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/summaries/summary.h"

namespace kd::train {
namespace {

template <typename T>
void append_paths(const Named<T>& named, std::vector<Path>& out) {
  for (const auto& [name, aux] : named) {
    for (const auto& [key, path] : aux->keys()) out.push_back(path);
  }
}

// Merges the states of `a` and `b` (dicts name -> state) with each owner's merge.
template <typename T>
Tree merge_named(const Named<T>& owners, const Tree& a, const Tree& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  Tree out = Tree::dict();
  for (const auto& [name, owner] : owners) {
    const Tree* x = a.find(name);
    const Tree* y = b.find(name);
    out.insert(name, owner->merge(x ? *x : Tree(), y ? *y : Tree()));
  }
  return out;
}

template <typename T>
Named<T> build_named(const config::Node& node, config::Registry<T>& registry) {
  Named<T> out;
  if (node.is_null()) return out;
  if (!node.is_map()) {
    throw ConfigError(node.where() + ": \"" + node.key_path() + "\" must be a map of name -> {type: ..., ...}");
  }
  for (const auto& name : node.keys()) out.emplace_back(name, registry.create(node.child(name)));
  return out;
}

}  // namespace

Auxiliaries build_auxiliaries(const config::Node& losses, const config::Node& metrics, const config::Node& summaries) {
  return Auxiliaries{.losses = build_named(losses, losses::registry()),
                     .metrics = build_named(metrics, metrics::registry()),
                     .summaries = build_named(summaries, summaries::registry())};
}

std::vector<Path> Auxiliaries::paths() const {
  std::vector<Path> out;
  append_paths(losses, out);
  append_paths(metrics, out);
  append_paths(summaries, out);
  return out;
}

std::vector<Path> Auxiliaries::paths_after_update() const {
  std::vector<Path> out;
  append_paths(metrics, out);
  append_paths(summaries, out);
  return out;
}

bool reads_field(const std::vector<Path>& paths, std::string_view field) {
  for (const auto& p : paths) {
    if (p.empty()) continue;
    if (p.front().is_glob() || (p.front().kind == PathSegment::Kind::kKey && p.front().key == field)) return true;
  }
  return false;
}

AuxiliariesState merge(const AuxiliariesState& a, const AuxiliariesState& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  const auto& aux = a.auxiliaries ? a.auxiliaries : b.auxiliaries;
  if (!aux) throw Error("cannot merge auxiliary states that do not name their auxiliaries");
  AuxiliariesState out;
  out.auxiliaries = aux;
  out.loss_states = merge_named(aux->losses, a.loss_states, b.loss_states);
  out.metric_states = merge_named(aux->metrics, a.metric_states, b.metric_states);
  out.summary_states = merge_named(aux->summaries, a.summary_states, b.summary_states);
  return out;
}

std::vector<std::pair<std::string, double>> compute_scalars(const AuxiliariesState& state) {
  std::vector<std::pair<std::string, double>> out;
  const auto& auxiliaries = state.auxiliaries;
  const Tree& loss_states = state.loss_states;
  const Tree& metric_states = state.metric_states;
  if (!auxiliaries) return out;
  double total = 0;
  bool any_loss = false;
  for (const auto& [name, loss] : auxiliaries->losses) {
    const Tree* state = loss_states.find(name);
    if (!state || state->empty()) continue;
    const double v = metrics::AverageState::compute(*state).item<double>();
    out.emplace_back("losses/" + name, v);
    total += v;
    any_loss = true;
  }
  if (any_loss) out.emplace_back("losses/total", total);
  for (const auto& [name, metric] : auxiliaries->metrics) {
    const Tree* state = metric_states.find(name);
    if (!state || state->empty()) continue;
    const Tree value =
        detail::with_context("compute()", "metric", "metrics", name, [&] { return metric->compute(*state); });
    if (value.is_leaf()) {
      out.emplace_back("metrics/" + name, value.to_double());
    } else {
      for (const auto& [path, leaf] : value.flatten())
        out.emplace_back("metrics/" + name + "/" + path, leaf.to_double());
    }
  }
  return out;
}

std::vector<SummaryValue> compute_summaries(const AuxiliariesState& states) {
  std::vector<SummaryValue> out;
  if (!states.auxiliaries) return out;
  for (const auto& [name, summary] : states.auxiliaries->summaries) {
    const Tree* state = states.summary_states.find(name);
    if (!state || state->empty()) continue;
    Tree value =
        detail::with_context("compute()", "summary", "summaries", name, [&] { return summary->compute(*state); });
    out.push_back({"summaries/" + name, summary.get(), std::move(value)});
  }
  return out;
}

}  // namespace kd::train
