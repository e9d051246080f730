// kd::train::Context: the namespace every loss, metric and summary reads by path.
//
// A step fills it progressively, in the order of its fields:
//
//   Context ctx = Context::from_state_and_batch(state, batch);  // step, batch, params, ...
//   ctx = ctx.replace({.preds = preds, .interms = interms});     // after the model forward
//   torch::Tensor logits = ctx.get("preds.logits").tensor();
//   ctx.get("preds.logit");  // kd::KeyError: ... "preds" has: logits. Did you mean "preds.logits"?
//   ctx.get("grads.w");      // kd::KeyError: ... grads are filled after the backward pass
//
// A Context is a value: `replace` returns a new one, and the fields it does not name are shared
// with the old one (trees share tensor storage, so this costs a few reference counts).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trainer/context/auxiliaries_state.h"
#include "trainer/context/auxiliary.h"
#include "trainer/context/error_context.h"
#include "trainer/context/train_state.h"
#include "trainer/tree/tree.h"

namespace kd::train {

struct TrainState;

// The fields to change in Context::replace; unset ones are kept.
struct ContextUpdate {
  std::optional<int64_t> step;
  std::optional<Tree> batch;
  std::optional<Tree> params;
  std::optional<Tree> collections;
  std::optional<Tree> preds;
  std::optional<Tree> interms;
  std::optional<Tree> loss_states;
  std::optional<Tree> loss_total;
  std::optional<Tree> grads;
  std::optional<Tree> updates;
  std::optional<Tree> opt_state;
  std::optional<Tree> metric_states;
  std::optional<Tree> summary_states;
};

struct Context {
  int64_t step = 0;     // the global step number; schedules are evaluated at it
  Tree batch;           // the input batch as returned by the data pipeline
  Tree params;          // the model's parameters
  Tree collections;     // other variables, e.g. BatchNorm statistics (buffers)
  Tree preds;           // the model's output
  Tree interms;         // intermediate outputs recorded during the forward pass
  Tree loss_states;     // the state of each loss
  Tree loss_total;      // the total (weighted) loss of the step
  Tree grads;           // d loss_total / d params
  Tree updates;         // the change the optimizer applied to params
  Tree opt_state;       // the optimizer state before the update (consistent with params)
  Tree metric_states;   // the state of each metric
  Tree summary_states;  // the state of each summary

  // step, params, collections and opt_state from `state`; the rest empty.
  static Context from_state_and_batch(const TrainState& state, Tree batch);

  // A new Context with the given fields replaced and all others shared.
  Context replace(const ContextUpdate& updates) const;

  // Every leaf as "field.sub.path" -> value, fields in declaration order ("step" first).
  std::vector<std::pair<std::string, Tree>> flatten() const;

  // The requested auxiliary states (the others left empty).
  AuxiliariesState get_aux_state(const AuxStateRequest& request = {}) const;

  // Path access ("preds.logits"); throws kd::KeyError with the nearest keys, or the stage
  // that fills a field that is still empty.
  Tree get(const Path& path) const;
  Tree get(std::string_view path) const { return get(Path::parse(path)); }
  bool contains(const Path& path) const;
  // Glob access ("grads.**", "params.*.bias"); see Tree::glob.
  std::vector<std::pair<Path, Tree>> glob(const Path& pattern) const;

  // All fields as one dict tree ("step" as an int leaf, empty fields as none).
  Tree to_tree() const;

  // The field names, in order, and the stage of the step that fills each one.
  struct FieldInfo {
    const char* name;
    const char* filled_by;
  };
  static const std::vector<FieldInfo>& fields();
  // The field called `name`, or nullptr ("step" is not a tree and gives nullptr).
  const Tree* field(std::string_view name) const;
};

}  // namespace kd::train
