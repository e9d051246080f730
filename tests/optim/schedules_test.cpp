#include <catch2/catch.hpp>

#include <cmath>

#include "trainer/common/error.h"
#include "trainer/optim/schedules.h"

using kd::config::Node;
using kd::optim::make_schedule;

TEST_CASE("a number is a constant schedule") {
  const auto s = make_schedule(Node::parse("0.5"));
  CHECK((*s)(0) == 0.5);
  CHECK((*s)(1000) == 0.5);
}

TEST_CASE("linear interpolates between its ends and holds them outside") {
  const auto s = make_schedule(
      Node::parse("{type: Linear, init_value: 1, end_value: 0, transition_steps: 10, transition_begin: 5}"));
  CHECK((*s)(0) == 1.0);
  CHECK((*s)(5) == 1.0);
  CHECK((*s)(10) == Approx(0.5));
  CHECK((*s)(15) == 0.0);
  CHECK((*s)(100) == 0.0);
}

TEST_CASE("cosine decay follows half a cosine to alpha times the initial value") {
  const auto s = make_schedule(Node::parse("{type: CosineDecay, init_value: 2, decay_steps: 100, alpha: 0.1}"));
  CHECK((*s)(0) == Approx(2.0));
  CHECK((*s)(50) == Approx(0.2 + 1.8 * 0.5));
  CHECK((*s)(100) == Approx(0.2));
  CHECK((*s)(200) == Approx(0.2));
}

TEST_CASE("warmup cosine decay rises linearly then decays") {
  const auto s =
      make_schedule(Node::parse("{type: WarmupCosineDecay, peak_value: 1, warmup_steps: 10, decay_steps: 110}"));
  CHECK((*s)(0) == 0.0);
  CHECK((*s)(5) == Approx(0.5));
  CHECK((*s)(10) == Approx(1.0));
  CHECK((*s)(60) == Approx(0.5));
  CHECK((*s)(110) == Approx(0.0).margin(1e-12));
}

TEST_CASE("exponential decay, smooth and staircase") {
  const auto s =
      make_schedule(Node::parse("{type: ExponentialDecay, init_value: 1, transition_steps: 10, decay_rate: 0.5}"));
  CHECK((*s)(10) == Approx(0.5));
  CHECK((*s)(15) == Approx(std::pow(0.5, 1.5)));
  const auto stairs =
      make_schedule(Node::parse("{type: ExponentialDecay, init_value: 1, transition_steps: 10, decay_rate: 0.5, "
                                "staircase: true, end_value: 0.3}"));
  CHECK((*stairs)(15) == Approx(0.5));
  CHECK((*stairs)(25) == Approx(0.3));  // 0.25 clipped at end_value
}

TEST_CASE("piecewise constant multiplies at each boundary") {
  const auto s =
      make_schedule(Node::parse("{type: PiecewiseConstant, init_value: 1, boundaries: [10, 20], scales: [0.1, 0.5]}"));
  CHECK((*s)(9) == 1.0);
  CHECK((*s)(10) == Approx(0.1));
  CHECK((*s)(20) == Approx(0.05));
}

TEST_CASE("schedule options are validated") {
  CHECK_THROWS_AS(make_schedule(Node::parse("{type: PiecewiseConstant, init_value: 1, boundaries: [10], scales: []}")),
                  kd::ConfigError);
  CHECK_THROWS_WITH(make_schedule(Node::parse("{type: Linaer, init_value: 1}")),
                    Catch::Contains("Did you mean Linear"));
  CHECK_THROWS_WITH(
      make_schedule(Node::parse("{type: Linear, init_value: 1, end_value: 0, transition_steps: 5, step: 3}")),
      Catch::Contains("unknown key \"step\""));
}

TEST_CASE("Polynomial follows optax's (init - end) * (1 - t)^power + end") {
  const auto s = make_schedule(Node::parse(
      "{type: Polynomial, init_value: 1, end_value: 0.1, power: 2, transition_steps: 10, transition_begin: 5}"));
  CHECK((*s)(0) == 1.0);
  CHECK((*s)(5) == 1.0);
  CHECK((*s)(10) == Approx(0.9 * 0.25 + 0.1));  // half way: (1 - 0.5)^2
  CHECK((*s)(15) == Approx(0.1));
  CHECK((*s)(100) == Approx(0.1));
  CHECK_THROWS_WITH(make_schedule(Node::parse("{type: Polynomial, init_value: 1, end_value: 0, power: 1, "
                                              "transition_steps: 0}")),
                    Catch::Contains("transition_steps"));
}

TEST_CASE("JoinSchedules gives each schedule the steps since its boundary, as optax.join_schedules") {
  const auto s =
      make_schedule(Node::parse("{type: JoinSchedules, boundaries: [5], schedules: [1.0, "
                                "{type: Linear, init_value: 1, end_value: 0, transition_steps: 10}]}"));
  CHECK((*s)(4) == 1.0);
  CHECK((*s)(5) == 1.0);  // the linear schedule at its step 0
  CHECK((*s)(10) == Approx(0.5));
  CHECK((*s)(15) == 0.0);
  CHECK_THROWS_WITH(make_schedule(Node::parse("{type: JoinSchedules, boundaries: [5, 6], schedules: [1.0, 2.0]}")),
                    Catch::Contains("one boundary fewer than schedules"));
  CHECK_THROWS_WITH(make_schedule(Node::parse("{type: JoinSchedules, boundaries: [6, 5], schedules: [1, 2, 3]}")),
                    Catch::Contains("boundaries must increase"));
}

TEST_CASE("CosineOneCycle follows optax.cosine_onecycle_schedule, hand-computed") {
  // transition_steps 100, pct_start 0.3: optax's bounds -1, 30, 100 and values 1/25, 1, 1/250000.
  const auto s = make_schedule(Node::parse("{type: CosineOneCycle, transition_steps: 100, peak_value: 1.0}"));
  const double pi = 3.141592653589793;
  CHECK((*s)(0) == Approx(1.0 + (0.04 - 1.0) / 2 * (std::cos(pi * 1.0 / 31.0) + 1)).epsilon(1e-12));
  CHECK((*s)(30) == Approx(1.0).epsilon(1e-12));
  CHECK((*s)(65) == Approx(4e-6 + (1.0 - 4e-6) / 2).epsilon(1e-12));  // half way down
  CHECK((*s)(100) == Approx(4e-6).epsilon(1e-12));
  CHECK((*s)(1000) == Approx(4e-6).epsilon(1e-12));
  const auto t = make_schedule(
      Node::parse("{type: CosineOneCycle, transition_steps: 10, peak_value: 2.0, pct_start: 0.5, div_factor: 4, "
                  "final_div_factor: 10}"));
  CHECK((*t)(-1) == Approx(0.5));  // optax's first bound
  CHECK((*t)(5) == Approx(2.0));
  CHECK((*t)(10) == Approx(0.05));
}

TEST_CASE("Sgdr restarts a warmup-cosine cycle where the last one's decay_steps end, as optax.sgdr_schedule") {
  const auto s = make_schedule(Node::parse(
      "{type: Sgdr, cycles: [{init_value: 0, peak_value: 1, warmup_steps: 2, decay_steps: 10, end_value: 0},"
      " {peak_value: 0.5, warmup_steps: 0, decay_steps: 20}]}"));
  CHECK((*s)(0) == 0.0);
  CHECK((*s)(1) == Approx(0.5));
  CHECK((*s)(2) == Approx(1.0));
  CHECK((*s)(6) == Approx(0.5));   // half of the first cosine (4 of 8 steps)
  CHECK((*s)(10) == Approx(0.5));  // the restart: the second cycle's peak
  CHECK((*s)(20) == Approx(0.25));
  CHECK((*s)(30) == Approx(0.0).margin(1e-12));
  CHECK((*s)(100) == Approx(0.0).margin(1e-12));
  CHECK_THROWS_WITH(make_schedule(Node::parse("{type: Sgdr, cycles: [{peak_value: 1, warmup_steps: 0, "
                                              "decay_steps: 10, decay: 3}]}")),
                    Catch::Contains("decay"));
}
