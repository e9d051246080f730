#include <catch2/catch.hpp>

#include "trainer/run/progress_internal.h"

using kd::train::ProgressConsole;

TEST_CASE("the progress bar shows the step, this run's rate, the ETA and losses/total") {
  // 250 of 1000 steps at 50 steps/s: 750 / 50 = 15 s to go.
  const std::string line = ProgressConsole::format_bar(250, 1000, 50.0, 0.123456, 200);
  CHECK(line == "[=======>                      ] 250/1000  50.0 steps/s  ETA 0:00:15  losses/total 0.1235");
  CHECK(ProgressConsole::format_bar(1000, 1000, 10.0, std::nullopt, 200) ==
        "[==============================] 1000/1000  10.0 steps/s  ETA 0:00:00");
}

TEST_CASE("the progress bar fits the terminal's width") {
  for (int columns : {20, 40, 79}) {
    INFO(columns);
    CHECK(ProgressConsole::format_bar(250, 1000, 50.0, 0.5, columns).size() == static_cast<std::size_t>(columns - 1));
  }
}
