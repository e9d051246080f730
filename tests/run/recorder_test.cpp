#include "trainer/run/recorder_internal.h"

#include <catch2/catch.hpp>

#include <map>

#include "trainer/run/workdir_internal.h"
#include "trainer/runtime/memory.h"

namespace {

std::map<std::string, double> as_map(const kd::writers::Scalars& values) {
  std::map<std::string, double> out;
  for (const auto& [name, value] : values) out[name] = value;
  return out;
}

}  // namespace

TEST_CASE("perf_stats: the speeds count the steps' time only; checkpoints and evals are timed apart") {
  auto logger = kd::train::make_run_logger();
  kd::train::Workdir workdir("unused-workdir", kd::writers::WriterOptions{}, logger.log, /*is_chief=*/true);
  kd::train::Recorder recorder(logger.log, logger.console, /*progress=*/false, workdir);
  // 50 steps in 12 s, of which 1.5 s saving a checkpoint and 0.5 s in an eval: 10 s of steps.
  const kd::train::IntervalTiming interval{.steps = 50,
                                           .seconds = 12,
                                           .data_wait_seconds = 2,
                                           .checkpoint_seconds = 1.5,
                                           .eval_seconds = 0.5,
                                           .batch_size = 64,
                                           .world_size = 4,
                                           .training_seconds = 9000};
  const auto values = as_map(recorder.train_metrics(100, {{"losses/total", 0.25}}, interval));
  CHECK(values.at("losses/total") == 0.25);
  CHECK(values.at("perf_stats/steps_per_sec") == Approx(5.0));
  CHECK(values.at("perf_stats/step_time_ms") == Approx(200.0));
  CHECK(values.at("perf_stats/examples_per_sec") == Approx(320.0));
  CHECK(values.at("perf_stats/data_points_per_sec_global") == Approx(320.0));
  CHECK(values.at("perf_stats/data_points_per_sec_per_device") == Approx(80.0));
  CHECK(values.at("perf_stats/data_wait_fraction") == Approx(0.2));
  CHECK(values.at("perf_stats/checkpoint_time_sec") == 1.5);
  CHECK(values.at("perf_stats/eval_time_sec") == 0.5);
  CHECK(values.at("perf_stats/total_training_time_hours") == Approx(2.5));
  const double peak_mb = values.at("perf_stats/peak_host_memory_mb");
  CHECK(peak_mb > 0);
  CHECK(peak_mb <= static_cast<double>(kd::runtime::peak_host_memory_bytes()) / (1024.0 * 1024.0));
}
