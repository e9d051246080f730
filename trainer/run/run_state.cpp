#include <cmath>
#include <string>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"
#include "trainer/run/run_state_internal.h"

namespace kd::train {
namespace {

constexpr const char* kIntervalKeys[] = {"loss_states", "metric_states", "summary_states"};

}  // namespace

Tree RunState::to_tree() const {
  Tree out = Tree::dict();
  for (const char* key : kIntervalKeys) {
    const Tree* t = interval.is_dict() ? interval.find(key) : nullptr;
    out.insert(key, t ? *t : Tree());
  }
  if (!rank_rng.is_none()) out.insert("rank_rng", rank_rng);
  if (num_threads > 0) out.insert("num_threads", num_threads);
  out.insert("training_seconds", training_seconds);
  if (!grad_scaler.is_none()) out.insert("grad_scaler", grad_scaler);
  if (!callbacks.is_none() && !callbacks.empty()) out.insert("callbacks", callbacks);
  return out;
}

void RunState::save_to(checkpoints::Snapshot& snapshot) const {
  snapshot.aux = to_tree();
  snapshot.aux_steps = interval_steps;
}

RunState RunState::from_tree(const Tree& aux, int64_t aux_steps, const std::string& where) {
  const auto bad = [&](const std::string& key, const std::string& want) {
    return CorruptionError(where + ": the run's state \"" + key + "\" is not " + want);
  };
  if (!aux.is_dict()) throw bad("aux", "a dict");
  if (aux_steps < 0) throw bad("aux_steps", "a count of steps (>= 0)");
  RunState s;
  s.interval = Tree::dict();
  for (const char* key : kIntervalKeys) {
    if (const Tree* t = aux.find(key)) s.interval.insert(key, *t);
  }
  s.interval_steps = aux_steps;
  if (const Tree* t = aux.find("rank_rng")) {
    if (!t->is_dict() && !t->is_list() && !t->is_none()) throw bad("rank_rng", "the ranks' random states");
    s.rank_rng = *t;
  }
  if (const Tree* t = aux.find("num_threads")) {
    if (t->kind() != Tree::Kind::kInt || t->to_int() < 0) throw bad("num_threads", "a count of threads (>= 0)");
    s.num_threads = t->to_int();
  }
  if (const Tree* t = aux.find("training_seconds")) {
    const bool number = t->kind() == Tree::Kind::kFloat || t->kind() == Tree::Kind::kInt;
    if (!number || !std::isfinite(t->to_double()) || t->to_double() < 0) {
      throw bad("training_seconds", "a number of seconds (>= 0)");
    }
    s.training_seconds = t->to_double();
  }
  if (const Tree* t = aux.find("grad_scaler")) s.grad_scaler = *t;  // GradScaler::restore checks it
  if (const Tree* t = aux.find("callbacks")) {
    if (!t->is_dict()) throw bad("callbacks", "a dict of the callbacks' states");
    s.callbacks = *t;
  }
  return s;
}

RunState RunState::from_snapshot(const checkpoints::Snapshot& snapshot, const std::string& where) {
  return from_tree(snapshot.aux, snapshot.aux_steps, where);
}

}  // namespace kd::train
