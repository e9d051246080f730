// The work of each `kd` command, once its arguments are parsed (cli.cpp parses them). Each
// returns the exit code and throws kd::Error for a mistake in the input.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainer/run/trainer.h"

namespace kd::cli {

// The experiment of --cfg=FILE with the --cfg.key=value overrides in `extras`; its warnings to
// `log` (standard error when null).
config::Node load(const std::string& cfg, const std::vector<std::string>& extras, spdlog::logger* log = nullptr);

int run_train(const std::string& cfg, const std::vector<std::string>& extras, std::shared_ptr<spdlog::logger> log);
int run_inspect(const std::string& cfg, const std::vector<std::string>& extras, std::shared_ptr<spdlog::logger> log);
// kd config: the experiment as a run would use it, each value with its source (config_print.cpp).
int run_config(const std::string& cfg, const std::vector<std::string>& extras, bool json,
               std::shared_ptr<spdlog::logger> log);
// kd eval: checkpoint `step` of the workdir (the newest valid one when < 0).
int run_eval(const std::string& workdir, int64_t step, const std::vector<std::string>& extras,
             std::shared_ptr<spdlog::logger> log);
// kd eval --follow: waits for the workdir's experiment (written after a run's first step), then
// evaluates its checkpoints as they appear.
int run_follow(const std::string& workdir, const train::Trainer::FollowOptions& follow,
               const std::vector<std::string>& extras, std::shared_ptr<spdlog::logger> log);

// kd predict: the model of a workdir's checkpoint over a dataset (Trainer::predict).
struct PredictCommand {
  std::string workdir;
  int64_t step = -1;  // < 0: the newest valid checkpoint
  train::Trainer::PredictOptions options;
};
int run_predict(const PredictCommand& command, const std::vector<std::string>& extras,
                std::shared_ptr<spdlog::logger> log);

struct ExportOptions {
  std::string workdir, out, format = "safetensors";
  std::string program = "kd";  // the program's name in its warnings
  int64_t step = -1;           // < 0: the newest valid checkpoint
  bool collections = false, ema = false, overwrite = false;
  std::vector<std::string> strip_prefixes;
};
int run_export(const ExportOptions& options);

// kd report: the page of `workdirs` written to `out` (for one workdir by default its report.html).
int run_report(const std::vector<std::string>& workdirs, std::string out, bool overwrite);

// kd configs [NAME]: the registered component types (or one), with their options.
int run_configs(const std::string& name);

}  // namespace kd::cli
