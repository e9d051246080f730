#include "trainer/run/profiler_internal.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include "trainer/common/error.h"

namespace kd::train {

std::optional<ProfilerOptions> ProfilerOptions::from_config(const config::Node& experiment) {
  const auto node = experiment.find("profiler");
  if (!node || node->is_null()) return std::nullopt;
  if (!node->is_map()) {
    throw ConfigError(node->where() + ": profiler is a map, e.g. {first_profile: 10, num_profile_steps: 5}");
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const ProfilerOptions defaults;
  ProfilerOptions o;
  o.first_profile = node->get_int_in("first_profile", defaults.first_profile, 0, kMax);
  o.num_profile_steps = node->get_int_in("num_profile_steps", defaults.num_profile_steps, 1, 1000);
  o.every_steps = node->get_int_in("every_steps", defaults.every_steps, 0, kMax);
  o.every_secs = node->get_double_in("every_secs", defaults.every_secs, 0, std::numeric_limits<double>::max());
  if (o.every_steps > 0 && o.every_steps < o.num_profile_steps) {
    throw ConfigError(node->child("every_steps").where() + ": profiler.every_steps (" + std::to_string(o.every_steps) +
                      ") must be at least num_profile_steps (" + std::to_string(o.num_profile_steps) + ")");
  }
  node->check_unknown_keys();
  return o;
}

// The running profile: LibTorch's legacy profiler writes its Chrome trace when this ends.
struct Profiler::Recording {
  std::string path;
  std::ostringstream trace;
  std::optional<torch::autograd::profiler::RecordProfile> guard;
};

Profiler::Profiler(ProfilerOptions options, std::string directory, std::shared_ptr<spdlog::logger> log)
    : options_(options), directory_(std::move(directory)), log_(std::move(log)), next_(options.first_profile) {}

Profiler::~Profiler() = default;

void Profiler::start(int64_t step) {
  first_ = step;
  next_ = std::numeric_limits<int64_t>::max();  // set again when this one ends
  by_time_ = false;
  recording_state_ = std::make_unique<Recording>();
  recording_state_->guard.emplace(recording_state_->trace);
  recording_ = true;
}

void Profiler::stop(int64_t last_step) {
  recording_state_->guard.reset();  // the trace is complete
  const std::string name = "steps_" + std::to_string(first_) + "-" + std::to_string(last_step) + ".json";
  const std::string path = directory_ + "/" + name;
  std::error_code ec;
  std::filesystem::create_directories(directory_, ec);
  std::ofstream out(path + ".tmp", std::ios::binary);
  out << recording_state_->trace.str();
  out.close();
  if (!out || (std::filesystem::rename(path + ".tmp", path, ec), ec)) {
    log_->warn("the profile of steps {}-{} could not be written to {}", first_, last_step, path);
  } else {
    log_->info("profile of steps {}-{} written to {} (open it in https://ui.perfetto.dev)", first_, last_step, path);
  }
  recording_state_.reset();
  recording_ = false;
  // The next one: every_steps after this one's start, or the first step every_secs from now.
  const int64_t by_steps =
      options_.every_steps > 0 ? first_ + options_.every_steps : std::numeric_limits<int64_t>::max();
  next_ = by_steps;
  by_time_ = options_.every_secs > 0;
  due_ = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                std::chrono::duration<double>(options_.every_secs));
}

void Profiler::finish(int64_t last_step) {
  if (recording_) stop(last_step);
}

}  // namespace kd::train
