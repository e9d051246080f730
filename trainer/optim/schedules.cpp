#include "trainer/optim/schedules.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

namespace kd::optim {
namespace {

class Constant : public Schedule {
 public:
  explicit Constant(double value) : value_(value) {}
  double operator()(int64_t) const override { return value_; }

 private:
  double value_;
};

// init_value -> end_value linearly over transition_steps, starting at transition_begin.
class Linear : public Schedule {
 public:
  explicit Linear(const config::Node& o)
      : init_(o.get_double("init_value")),
        end_(o.get_double("end_value")),
        steps_(o.get_int("transition_steps")),
        begin_(o.get_int_in("transition_begin", 0, 0, std::numeric_limits<int64_t>::max())) {
    if (steps_ <= 0) throw ConfigError(o.where() + ": transition_steps must be > 0, got " + std::to_string(steps_));
  }
  double operator()(int64_t step) const override {
    const double t = std::clamp(static_cast<double>(step - begin_) / static_cast<double>(steps_), 0.0, 1.0);
    return init_ + (end_ - init_) * t;
  }

 private:
  double init_, end_;
  int64_t steps_, begin_;
};

double cosine(double from, double to, double t) {
  return to + (from - to) * 0.5 * (1.0 + std::cos(std::numbers::pi * std::clamp(t, 0.0, 1.0)));
}

// optax.cosine_decay_schedule: init_value -> alpha * init_value over decay_steps.
class CosineDecay : public Schedule {
 public:
  explicit CosineDecay(const config::Node& o)
      : init_(o.get_double("init_value")), steps_(o.get_int("decay_steps")), alpha_(o.get_double("alpha", 0.0)) {
    if (steps_ <= 0) throw ConfigError(o.where() + ": decay_steps must be > 0");
  }
  double operator()(int64_t step) const override {
    return cosine(init_, alpha_ * init_, static_cast<double>(step) / static_cast<double>(steps_));
  }

 private:
  double init_;
  int64_t steps_;
  double alpha_;
};

// optax.warmup_cosine_decay_schedule: linear warmup from init_value to peak_value, then cosine
// decay to end_value; decay_steps counts the warmup too.
class WarmupCosineDecay : public Schedule {
 public:
  explicit WarmupCosineDecay(const config::Node& o)
      : init_(o.get_double("init_value", 0.0)),
        peak_(o.get_double("peak_value")),
        warmup_(o.get_int("warmup_steps")),
        decay_(o.get_int("decay_steps")),
        end_(o.get_double("end_value", 0.0)) {
    if (warmup_ < 0 || decay_ <= warmup_) {
      throw ConfigError(o.where() + ": need 0 <= warmup_steps < decay_steps, got " + std::to_string(warmup_) + " and " +
                        std::to_string(decay_));
    }
  }
  double operator()(int64_t step) const override {
    if (step < warmup_) return init_ + (peak_ - init_) * static_cast<double>(step) / static_cast<double>(warmup_);
    return cosine(peak_, end_, static_cast<double>(step - warmup_) / static_cast<double>(decay_ - warmup_));
  }

 private:
  double init_, peak_;
  int64_t warmup_, decay_;
  double end_;
};

// optax.exponential_decay.
class ExponentialDecay : public Schedule {
 public:
  explicit ExponentialDecay(const config::Node& o)
      : init_(o.get_double("init_value")),
        steps_(o.get_int("transition_steps")),
        rate_(o.get_double_in("decay_rate", std::nullopt, std::numeric_limits<double>::min(),
                              std::numeric_limits<double>::max())),
        begin_(o.get_int_in("transition_begin", 0, 0, std::numeric_limits<int64_t>::max())),
        staircase_(o.get_bool("staircase", false)),
        end_(o.find("end_value") ? std::optional<double>(o.get_double("end_value")) : std::nullopt) {
    if (steps_ <= 0) throw ConfigError(o.where() + ": transition_steps must be > 0");
  }
  double operator()(int64_t step) const override {
    double p = std::max<double>(0.0, static_cast<double>(step - begin_)) / static_cast<double>(steps_);
    if (staircase_) p = std::floor(p);
    double v = init_ * std::pow(rate_, p);
    if (end_) v = rate_ < 1 ? std::max(v, *end_) : std::min(v, *end_);
    return v;
  }

 private:
  double init_;
  int64_t steps_;
  double rate_;
  int64_t begin_;
  bool staircase_;
  std::optional<double> end_;
};

// optax.piecewise_constant_schedule: multiply by scales[i] once step >= boundaries[i].
class PiecewiseConstant : public Schedule {
 public:
  explicit PiecewiseConstant(const config::Node& o)
      : init_(o.get_double("init_value")),
        boundaries_(o.get_int_list_in("boundaries", std::nullopt, 0, std::numeric_limits<int64_t>::max())),
        scales_(o.get_double_list("scales")) {
    if (boundaries_.size() != scales_.size()) {
      throw ConfigError(o.where() + ": boundaries and scales must have the same length (" +
                        std::to_string(boundaries_.size()) + " vs " + std::to_string(scales_.size()) + ")");
    }
  }
  double operator()(int64_t step) const override {
    double v = init_;
    for (std::size_t i = 0; i < boundaries_.size(); ++i) {
      if (step >= boundaries_[i]) v *= scales_[i];
    }
    return v;
  }

 private:
  double init_;
  std::vector<int64_t> boundaries_;
  std::vector<double> scales_;
};

// optax.polynomial_schedule: init_value -> end_value over transition_steps (from
// transition_begin) as (init - end) * (1 - t)^power + end.
class Polynomial : public Schedule {
 public:
  explicit Polynomial(const config::Node& o)
      : init_(o.get_double("init_value")),
        end_(o.get_double("end_value")),
        power_(o.get_double("power")),
        steps_(o.get_int_in("transition_steps", std::nullopt, 1, std::numeric_limits<int64_t>::max())),
        begin_(o.get_int_in("transition_begin", 0, 0, std::numeric_limits<int64_t>::max())) {}
  double operator()(int64_t step) const override {
    const double count = static_cast<double>(std::clamp<int64_t>(step - begin_, 0, steps_));
    return (init_ - end_) * std::pow(1.0 - count / static_cast<double>(steps_), power_) + end_;
  }

 private:
  double init_, end_, power_;
  int64_t steps_, begin_;
};

// optax.join_schedules: schedules[0] before boundaries[0], then schedules[i + 1] from
// boundaries[i] on, each given the steps since its boundary.
class JoinSchedules : public Schedule {
 public:
  explicit JoinSchedules(const config::Node& o) : boundaries_(o.get_int_list("boundaries")) {
    for (const auto& s : o.child("schedules").elements()) schedules_.push_back(make_schedule(s));
    if (schedules_.empty() || boundaries_.size() + 1 != schedules_.size()) {
      throw ConfigError(o.where() + ": JoinSchedules needs one boundary fewer than schedules, got " +
                        std::to_string(schedules_.size()) + " schedules and " + std::to_string(boundaries_.size()) +
                        " boundaries");
    }
    for (std::size_t i = 0; i < boundaries_.size(); ++i) {
      if (boundaries_[i] < 0 || (i > 0 && boundaries_[i] <= boundaries_[i - 1])) {
        throw ConfigError(o.child("boundaries").where() + ": boundaries must increase from >= 0");
      }
    }
  }
  double operator()(int64_t step) const override {
    std::size_t i = 0;
    while (i < boundaries_.size() && step >= boundaries_[i]) ++i;
    return (*schedules_[i])(i == 0 ? step : step - boundaries_[i - 1]);
  }

 private:
  std::vector<int64_t> boundaries_;
  std::vector<SchedulePtr> schedules_;
};

// optax.cosine_onecycle_schedule (optax's piecewise_interpolate_schedule with cosine
// interpolation): peak_value / div_factor up to peak_value at pct_start of transition_steps,
// then down to peak_value / (div_factor * final_div_factor) at transition_steps, and that after.
class CosineOneCycle : public Schedule {
 public:
  explicit CosineOneCycle(const config::Node& o) {
    const int64_t steps = o.get_int_in("transition_steps", std::nullopt, 1, std::numeric_limits<int64_t>::max());
    const double peak = o.get_double("peak_value");
    const double pct_start = o.get_double_in("pct_start", 0.3, 0.0, 1.0);
    const double div = o.get_double_in("div_factor", 25.0, 0.0, std::numeric_limits<double>::max());
    const double final_div = o.get_double_in("final_div_factor", 1e4, 0.0, std::numeric_limits<double>::max());
    if (div == 0 || final_div == 0) throw ConfigError(o.where() + ": div_factor and final_div_factor must be > 0");
    const auto middle = static_cast<int64_t>(pct_start * static_cast<double>(steps));
    if (middle <= 0 || middle >= steps) {
      throw ConfigError(o.where() + ": pct_start * transition_steps must fall strictly inside (0, transition_steps)");
    }
    // optax's bounds start at -1: the first interval is [-1, middle).
    bounds_ = {-1, middle, steps};
    values_ = {peak / div, peak, peak / (div * final_div)};
  }
  double operator()(int64_t step) const override {
    if (step >= bounds_[2]) return values_[2];
    const std::size_t i = step < bounds_[1] ? 0 : 1;
    const double t = static_cast<double>(step - bounds_[i]) / static_cast<double>(bounds_[i + 1] - bounds_[i]);
    return values_[i + 1] + (values_[i] - values_[i + 1]) / 2.0 * (std::cos(std::numbers::pi * t) + 1.0);
  }

 private:
  std::vector<int64_t> bounds_;
  std::vector<double> values_;
};

// optax.sgdr_schedule: cosine decay with warm restarts, one WarmupCosineDecay per cycle, each
// starting where the last one's decay_steps end.
class Sgdr : public Schedule {
 public:
  explicit Sgdr(const config::Node& o) {
    int64_t start = 0;
    const auto cycles = o.child("cycles").elements();
    if (cycles.empty()) throw ConfigError(o.where() + ": Sgdr needs at least one cycle");
    for (const auto& c : cycles) {
      starts_.push_back(start);
      cycles_.push_back(std::make_shared<WarmupCosineDecay>(c));
      start += c.get_int("decay_steps");
      c.check_unknown_keys();
    }
  }
  double operator()(int64_t step) const override {
    std::size_t i = 0;
    while (i + 1 < starts_.size() && step >= starts_[i + 1]) ++i;
    return (*cycles_[i])(step - starts_[i]);
  }

 private:
  std::vector<int64_t> starts_;  // each cycle's first step
  std::vector<SchedulePtr> cycles_;
};

}  // namespace

config::Registry<Schedule>& schedule_registry() {
  return config::Registry<Schedule>::built_once("schedule", [](config::Registry<Schedule>& r) {
    r.add(
        "Constant", [](const config::Node& o) { return std::make_shared<Constant>(o.get_double("value")); }, "value");
    r.add<Linear>("Linear", "init_value, end_value, transition_steps, transition_begin=0");
    r.add<CosineDecay>("CosineDecay", "init_value, decay_steps, alpha=0");
    r.add<WarmupCosineDecay>("WarmupCosineDecay", "init_value=0, peak_value, warmup_steps, decay_steps, end_value=0");
    r.add<ExponentialDecay>("ExponentialDecay",
                            "init_value, transition_steps, decay_rate, transition_begin=0, staircase=false, end_value");
    r.add<PiecewiseConstant>("PiecewiseConstant", "init_value, boundaries, scales");
    r.add<Polynomial>("Polynomial", "init_value, end_value, power, transition_steps, transition_begin=0");
    r.add<JoinSchedules>("JoinSchedules", "schedules: [schedule, ...], boundaries: [step, ...] (one fewer)");
    r.add<CosineOneCycle>("CosineOneCycle",
                          "transition_steps, peak_value, pct_start=0.3, div_factor=25, final_div_factor=1e4");
    r.add<Sgdr>("Sgdr", "cycles: [{init_value, peak_value, warmup_steps, decay_steps, end_value}, ...]");
  });
}

SchedulePtr constant_schedule(double value) { return std::make_shared<Constant>(value); }

SchedulePtr make_schedule(const config::Node& node) {
  if (node.is_scalar()) return constant_schedule(node.as_double());
  return schedule_registry().create(node);
}

}  // namespace kd::optim
