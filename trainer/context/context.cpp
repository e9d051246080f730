#include "trainer/context/context.h"

#include "trainer/common/suggest.h"
#include "trainer/context/train_state.h"
#include "trainer/tree/tree_access.h"

namespace kd::train {
namespace {

struct Field {
  Context::FieldInfo info;
  Tree Context::*member;  // nullptr for "step"
};

const std::vector<Field>& field_table() {
  static const std::vector<Field> table = {
      {{"step", "the step number is set when the step starts"}, nullptr},
      {{"batch", "batch is filled from the data pipeline when the step starts"}, &Context::batch},
      {{"params", "params are filled from the TrainState when the step starts"}, &Context::params},
      {{"collections", "collections are filled from the TrainState and by the model forward"}, &Context::collections},
      {{"preds", "preds are filled by the model forward"}, &Context::preds},
      {{"interms",
        "interms are filled by the model forward (modules record them when an "
        "auxiliary reads interms)"},
       &Context::interms},
      {{"loss_states", "loss_states are filled by the losses after the forward pass"}, &Context::loss_states},
      {{"loss_total", "loss_total is filled by the losses after the forward pass"}, &Context::loss_total},
      {{"grads", "grads are filled after the backward pass"}, &Context::grads},
      {{"updates", "updates are filled by the optimizer step"}, &Context::updates},
      {{"opt_state", "opt_state is filled from the TrainState when the step starts"}, &Context::opt_state},
      {{"metric_states", "metric_states are filled by the metrics at the end of the step"}, &Context::metric_states},
      {{"summary_states", "summary_states are filled by the summaries at the end of the step"},
       &Context::summary_states},
  };
  return table;
}

std::vector<std::string> field_names() {
  std::vector<std::string> names;
  for (const auto& f : field_table()) names.emplace_back(f.info.name);
  return names;
}

// The field named by the first segment of `path`; throws a KeyError for an unknown field or
// (when `require_filled`) an empty one.
const Field& field_of(const Context& ctx, const Path& path, bool require_filled) {
  const PathSegment& first = path.front();
  if (first.kind == PathSegment::Kind::kKey) {
    for (const auto& f : field_table()) {
      if (first.key != f.info.name) continue;
      if (require_filled && f.member && (ctx.*f.member).is_none()) {
        throw KeyError("no key \"" + path.str() + "\" in context; \"" + f.info.name +
                       "\" is empty at this point: " + f.info.filled_by);
      }
      return f;
    }
  }
  kd::detail::throw_key_error(path, 0, Tree::dict([] {
                                std::vector<Tree::Item> items;
                                for (const auto& name : field_names()) items.emplace_back(name, Tree());
                                return items;
                              }()),
                              "context");
}

}  // namespace

Context Context::from_state_and_batch(const TrainState& state, Tree batch) {
  return Context{
      .step = state.step,
      .batch = std::move(batch),
      .params = state.params,
      .collections = state.collections,
      .opt_state = state.opt_state,
  };
}

Context Context::replace(const ContextUpdate& u) const {
  Context out = *this;
  if (u.step) out.step = *u.step;
  const std::optional<Tree> ContextUpdate::*update_members[] = {
      &ContextUpdate::batch,      &ContextUpdate::params,        &ContextUpdate::collections,
      &ContextUpdate::preds,      &ContextUpdate::interms,       &ContextUpdate::loss_states,
      &ContextUpdate::loss_total, &ContextUpdate::grads,         &ContextUpdate::updates,
      &ContextUpdate::opt_state,  &ContextUpdate::metric_states, &ContextUpdate::summary_states,
  };
  // field_table()[1:] lists the tree fields in the same order as update_members.
  const auto& table = field_table();
  for (std::size_t i = 0; i < std::size(update_members); ++i) {
    if (const auto& value = u.*update_members[i]) out.*table[i + 1].member = *value;
  }
  return out;
}

std::vector<std::pair<std::string, Tree>> Context::flatten() const {
  std::vector<std::pair<std::string, Tree>> out;
  out.emplace_back("step", Tree(step));
  for (const auto& f : field_table()) {
    if (f.member == nullptr) continue;
    auto leaves = (this->*f.member).flatten(f.info.name);
    out.insert(out.end(), std::make_move_iterator(leaves.begin()), std::make_move_iterator(leaves.end()));
  }
  return out;
}

AuxiliariesState Context::get_aux_state(const AuxStateRequest& request) const {
  AuxiliariesState out;
  if (request.return_losses) out.loss_states = loss_states;
  if (request.return_metrics) out.metric_states = metric_states;
  if (request.return_summaries) out.summary_states = summary_states;
  return out;
}

Tree Context::get(const Path& path) const {
  if (path.empty()) throw KeyError("an empty path names no field of the context");
  const Field& f = field_of(*this, path, /*require_filled=*/true);
  if (f.member == nullptr) {
    if (path.size() > 1) kd::detail::throw_key_error(path, 1, Tree(step), "context");
    return Tree(step);
  }
  return kd::detail::get_from(this->*f.member, path, 1, "context");
}

bool Context::contains(const Path& path) const {
  if (path.empty() || path.front().kind != PathSegment::Kind::kKey) return false;
  if (path.front().key == "step") return path.size() == 1;
  const Tree* tree = field(path.front().key);
  return tree && !tree->is_none() && tree->contains(path.drop_front());
}

std::vector<std::pair<Path, Tree>> Context::glob(const Path& pattern) const {
  if (pattern.empty()) return {};
  if (pattern.front().is_glob()) return to_tree().glob(pattern);
  const Field& f = field_of(*this, pattern, /*require_filled=*/true);
  const Tree value = f.member ? this->*f.member : Tree(step);
  return kd::detail::glob_in(Tree::dict({{f.info.name, value}}), pattern, "context");
}

Tree Context::to_tree() const {
  Tree out = Tree::dict();
  for (const auto& f : field_table()) out.insert(f.info.name, f.member ? this->*f.member : Tree(step));
  return out;
}

const std::vector<Context::FieldInfo>& Context::fields() {
  static const std::vector<FieldInfo> infos = [] {
    std::vector<FieldInfo> out;
    for (const auto& f : field_table()) out.push_back(f.info);
    return out;
  }();
  return infos;
}

const Tree* Context::field(std::string_view name) const {
  for (const auto& f : field_table()) {
    if (name == f.info.name) return f.member ? &(this->*f.member) : nullptr;
  }
  return nullptr;
}

}  // namespace kd::train
