#include "trainer/run/recorder_internal.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/nn/module.h>

#include "trainer/context/context.h"
#include "trainer/run/progress_internal.h"
#include "trainer/run/workdir_internal.h"
#include "trainer/runtime/memory.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/summaries/summary.h"

namespace kd::train {

Recorder::Recorder(std::shared_ptr<spdlog::logger> log, std::shared_ptr<ProgressConsole> console, bool progress,
                   Workdir& workdir)
    : log_(std::move(log)), console_(std::move(console)), progress_(progress), workdir_(workdir) {}

std::string model_table(const torch::nn::Module& model) {
  std::string out;
  int64_t total = 0;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    out +=
        fmt::format("  params.{:<40} {:<20} {:>10}\n", item.key(), describe_tensor(item.value()), item.value().numel());
    total += item.value().numel();
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    out += fmt::format("  collections.{:<35} {:<20}\n", item.key(), describe_tensor(item.value()));
  }
  return out + fmt::format("  total: {} parameters\n", total);
}

void Recorder::record_start(const Context& first_context, const std::string& experiment_yaml,
                            const std::string& model_table) {
  std::string context;
  for (const auto& [path, leaf] : first_context.flatten()) context += path + "  " + leaf.describe() + "\n";
  log_->info("model:\n{}", model_table);
  for (auto& w : workdir_.writers()) {
    w->write_text(0, "train", "config", "```\n" + experiment_yaml + "\n```");
    w->write_text(0, "train", "model", "```\n" + model_table + "```");
    w->write_text(0, "train", "context", "```\n" + context + "```");
  }
}

writers::Scalars Recorder::train_metrics(int64_t step, writers::Scalars values, const IntervalTiming& interval) {
  const double seconds =
      std::max(interval.seconds - interval.checkpoint_seconds - interval.eval_seconds, 1e-9);  // the steps'
  const double steps_per_sec = static_cast<double>(interval.steps) / seconds;
  const double examples_per_sec = steps_per_sec * static_cast<double>(interval.batch_size);
  values.emplace_back("perf_stats/steps_per_sec", steps_per_sec);
  values.emplace_back("perf_stats/examples_per_sec", examples_per_sec);
  values.emplace_back("perf_stats/data_points_per_sec_global", examples_per_sec);
  values.emplace_back("perf_stats/data_points_per_sec_per_device",
                      examples_per_sec / static_cast<double>(std::max(interval.world_size, 1)));
  values.emplace_back("perf_stats/step_time_ms", 1e3 / steps_per_sec);
  values.emplace_back("perf_stats/data_wait_fraction", std::min(interval.data_wait_seconds / seconds, 1.0));
  values.emplace_back("perf_stats/checkpoint_time_sec", interval.checkpoint_seconds);
  values.emplace_back("perf_stats/eval_time_sec", interval.eval_seconds);
  values.emplace_back("perf_stats/total_training_time_hours", interval.training_seconds / 3600.0);
  values.emplace_back("perf_stats/peak_host_memory_mb",
                      static_cast<double>(runtime::peak_host_memory_bytes()) / (1024.0 * 1024.0));
  if (interval.skipped_examples >= 0) {
    values.emplace_back("perf_stats/skipped_examples", static_cast<double>(interval.skipped_examples));
  }
  if (interval.device_peak_bytes >= 0) {
    values.emplace_back("perf_stats/peak_device_memory_mb",
                        static_cast<double>(interval.device_peak_bytes) / (1024.0 * 1024.0));
  }
  for (auto& w : workdir_.writers()) w->write_scalars(step, "train", values);

  std::string line;
  for (const auto& [name, value] : values) {
    if (name.rfind("perf_stats/", 0) == 0 && name != "perf_stats/steps_per_sec") continue;
    line += fmt::format("  {} {:.4g}", name, value);
  }
  log_->info("step {}{}", step, line);
  return values;
}

writers::Scalars Recorder::eval(int64_t step, const std::string& name, const AuxiliariesState& result, double seconds) {
  summaries(step, name, result);
  writers::Scalars values = compute_scalars(result);
  values.emplace_back("perf_stats/eval_time_sec", seconds);
  for (auto& w : workdir_.writers()) w->write_scalars(step, name, values);
  std::string line;
  for (const auto& [tag, value] : values) line += fmt::format("  {} {:.4g}", tag, value);
  log_->info("eval {} at step {}{}", name, step, line);
  return values;
}

void Recorder::summaries(int64_t step, const std::string& collection, const AuxiliariesState& state) {
  std::vector<writers::SummaryRecord> records;
  for (auto& s : compute_summaries(state)) {
    using Kind = writers::SummaryRecord::Kind;
    const auto kind = s.summary->kind() == summaries::Summary::Kind::kImages      ? Kind::kImages
                      : s.summary->kind() == summaries::Summary::Kind::kHistogram ? Kind::kHistogram
                                                                                  : Kind::kTexts;
    records.push_back({s.name, kind, std::move(s.value)});
  }
  if (records.empty()) return;
  for (auto& w : workdir_.writers()) w->write_summaries(step, collection, records);
}

void Recorder::progress(int64_t step, int64_t last_step, int64_t steps_this_run, double seconds,
                        const writers::Scalars& logged) {
  if (!progress_ || !console_) return;
  for (const auto& [name, value] : logged) {
    if (name == "losses/total") last_loss_ = value;
  }
  console_->update(step, last_step, steps_this_run, seconds, last_loss_);
}

void Recorder::clear() {
  if (console_) console_->clear();
}

void Recorder::flush() {
  for (auto& w : workdir_.writers()) w->flush();
}

}  // namespace kd::train
