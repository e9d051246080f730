// kd sweep's parts shared by its two files (internal): a point, its command, and running the
// points (sweep_run.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "trainer/cli/sweep.h"
#include "trainer/config/experiment.h"

namespace kd::cli::sweep_detail {

// One point: its overrides (key, YAML text) in the order the sweep gives them.
struct Point {
  std::vector<std::pair<std::string, std::string>> values;
  std::string name;
  std::filesystem::path workdir;
};

// The experiment's overrides, then the point's.
std::vector<config::Override> point_overrides(const std::vector<config::Override>& base, const Point& p);

// `kd train` on a point: PROGRAM train --cfg=CFG --cfg.KEY=VALUE ... [--cfg.num_threads=THREADS].
std::vector<std::string> point_command(const std::string& program, const std::string& cfg,
                                       const std::vector<config::Override>& overrides, int64_t threads);

// Runs the points not finished yet, options.jobs at a time, each `threads` intra-op threads (0:
// the experiment's); returns sweep()'s exit code.
int run_points(const SweepOptions& options, const std::vector<config::Override>& base, const std::vector<Point>& points,
               const std::filesystem::path& dir, int64_t threads);

}  // namespace kd::cli::sweep_detail
