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
