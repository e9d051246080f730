// Schedules: a number as a function of the step (learning rates, loss weights). Names and
// options follow optax:
//
//   learning_rate: 1e-3                                   # a constant
//   learning_rate: {type: WarmupCosineDecay, peak_value: 1e-3, warmup_steps: 500,
//                   decay_steps: 10000}
#pragma once

#include <cstdint>
#include <memory>

#include "trainer/config/node.h"
#include "trainer/config/registry.h"

namespace kd::optim {

class Schedule {
 public:
  virtual ~Schedule() = default;
  virtual double operator()(int64_t step) const = 0;
};

using SchedulePtr = std::shared_ptr<const Schedule>;

// Constant(value), Linear, CosineDecay, ExponentialDecay, PiecewiseConstant, WarmupCosineDecay,
// Polynomial, JoinSchedules, CosineOneCycle, Sgdr (optax's polynomial_schedule, join_schedules,
// cosine_onecycle_schedule, sgdr_schedule).
config::Registry<Schedule>& schedule_registry();

// A schedule from a YAML number (constant) or a map with a `type`.
SchedulePtr make_schedule(const config::Node& node);
SchedulePtr constant_schedule(double value);

}  // namespace kd::optim
