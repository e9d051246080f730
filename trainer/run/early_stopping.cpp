#include "trainer/run/early_stopping.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/run/trainer.h"

namespace kd::train {
namespace {

std::string number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

}  // namespace

EarlyStopping::EarlyStopping(const config::Node& o) {
  metric_ = o.get_string("metric");
  where_ = o.child("metric").where() + ": " + o.key_path() + ".metric";
  const auto slash = metric_.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == metric_.size()) {
    throw ConfigError(where_ + " is \"<eval name>/<logged value>\", e.g. test/metrics/accuracy, got \"" + metric_ +
                      "\"");
  }
  eval_ = metric_.substr(0, slash);
  value_name_ = metric_.substr(slash + 1);
  maximize_ = checkpoints::read_metric_mode(o, "mode", metric_);
  patience_ = o.get_int_in("patience", 3, 1, std::numeric_limits<int64_t>::max());
  min_delta_ = o.get_double_in("min_delta", 0.0, 0.0, std::numeric_limits<double>::max());
  o.check_unknown_keys();
}

void EarlyStopping::on_train_start(Trainer& trainer) {
  trainer.check_eval_value(metric_, where_);  // before the first step, not at the first eval
  if (stopped_) {
    trainer.request_stop("EarlyStopping stopped this run at an earlier start (best " + eval_ + "/" + value_name_ + " " +
                         number(best_) + " at step " + std::to_string(best_step_) + ")");
  }
}

bool EarlyStopping::improves(double value) const {
  if (!has_best_) return true;
  return maximize_ ? value > best_ + min_delta_ : value < best_ - min_delta_;
}

void EarlyStopping::on_eval_end(Trainer& trainer, const std::string& eval_name, int64_t step,
                                const writers::Scalars& values) {
  if (eval_name != eval_ || stopped_) return;
  const double* value = nullptr;
  std::vector<std::string> names;
  for (const auto& [name, v] : values) {
    if (name == value_name_) value = &v;
    names.push_back(name);
  }
  if (value == nullptr) {
    const std::vector<std::string> close = nearest(value_name_, names, 1);
    throw ConfigError(where_ + ": eval \"" + eval_ + "\" logs no \"" + value_name_ + "\"" +
                      (close.empty() ? "" : " (did you mean \"" + eval_ + "/" + close.front() + "\"?)") +
                      "; it logs: " + join_names(names));
  }
  if (std::isnan(*value)) {
    ++evals_without_improvement_;  // NaN never improves
  } else if (improves(*value)) {
    has_best_ = true;
    best_ = *value;
    best_step_ = step;
    evals_without_improvement_ = 0;
  } else {
    ++evals_without_improvement_;
  }
  if (evals_without_improvement_ >= patience_) {
    stopped_ = true;
    trainer.request_stop("EarlyStopping: " + eval_ + "/" + value_name_ + " did not improve" +
                         (min_delta_ > 0 ? " by more than " + number(min_delta_) : std::string()) + " in " +
                         std::to_string(evals_without_improvement_) + " evals (best " + number(best_) + " at step " +
                         std::to_string(best_step_) + ")");
  }
}

Tree EarlyStopping::state() const {
  return Tree::dict({{"has_best", Tree(static_cast<int64_t>(has_best_))},
                     {"best", Tree(best_)},
                     {"best_step", Tree(best_step_)},
                     {"evals_without_improvement", Tree(evals_without_improvement_)},
                     {"stopped", Tree(static_cast<int64_t>(stopped_))}});
}

void EarlyStopping::restore(const Tree& s) {
  has_best_ = s.get("has_best").to_int() != 0;
  best_ = s.get("best").to_double();
  best_step_ = s.get("best_step").to_int();
  evals_without_improvement_ = s.get("evals_without_improvement").to_int();
  stopped_ = s.get("stopped").to_int() != 0;
}

}  // namespace kd::train
