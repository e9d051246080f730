#include "trainer/optim/schedules.h"

#include <algorithm>
#include <cmath>
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
        begin_(o.get_int("transition_begin", 0)) {
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
        rate_(o.get_double("decay_rate")),
        begin_(o.get_int("transition_begin", 0)),
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
        boundaries_(o.get_int_list("boundaries")),
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
  });
}

SchedulePtr constant_schedule(double value) { return std::make_shared<Constant>(value); }

SchedulePtr make_schedule(const config::Node& node) {
  if (node.is_scalar()) return constant_schedule(node.as_double());
  return schedule_registry().create(node);
}

}  // namespace kd::optim
