// kd::train::Profiler: Kauldron's kd.inspect.Profiler for a kd run. Traces of a few training
// steps from LibTorch's profiler, written as Chrome trace JSON (open in https://ui.perfetto.dev
// or chrome://tracing) to WORKDIR/profile/steps_<first>-<last>.json:
//
//   profiler:
//     first_profile: 10        # the first profiled step (default 10)
//     num_profile_steps: 5     # steps per profile (default 5)
//     every_steps: 0           # profile again every this many steps (0: not by steps)
//     every_secs: 3600         # ... or once this many seconds passed since the last (0: not by time)
//
// Off unless the experiment has a `profiler` section; when off, or between profiles, a step
// costs one comparison. Rank 0 profiles for a job.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "trainer/config/node.h"

namespace spdlog {
class logger;
}

namespace kd::train {

struct ProfilerOptions {
  int64_t first_profile = 10;
  int64_t num_profile_steps = 5;
  int64_t every_steps = 0;
  double every_secs = 3600;

  // The `profiler` section, or nullopt when the experiment has none.
  static std::optional<ProfilerOptions> from_config(const config::Node& experiment);
};

class Profiler {
 public:
  Profiler(ProfilerOptions options, std::string directory, std::shared_ptr<spdlog::logger> log);
  ~Profiler();

  // Around training step `step` (the number of steps done before it).
  void before_step(int64_t step) {
    if (step >= next_ || (by_time_ && std::chrono::steady_clock::now() >= due_)) start(step);
  }
  void after_step(int64_t step) {
    if (recording_ && step + 1 >= first_ + options_.num_profile_steps) stop(step);
  }
  // Writes a profile that is still recording (the run ended inside it).
  void finish(int64_t last_step);

 private:
  void start(int64_t step);
  void stop(int64_t last_step);

  struct Recording;
  ProfilerOptions options_;
  std::string directory_;
  std::shared_ptr<spdlog::logger> log_;
  int64_t next_;  // the step the next profile starts at
  int64_t first_ = 0;
  bool recording_ = false;
  std::unique_ptr<Recording> recording_state_;
  bool by_time_ = false;  // every_secs: the next profile starts at the first step after due_
  std::chrono::steady_clock::time_point due_;
};

}  // namespace kd::train
