#include "trainer/cli/commands_internal.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include <spdlog/logger.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/export.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/config/experiment.h"
#include "trainer/data/source.h"
#include "trainer/data/transforms.h"
#include "trainer/io/file_system.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer_type.h"
#include "trainer/optim/schedules.h"
#ifdef KD_WITH_REPORT
#include "trainer/report/report.h"
#endif
#include "trainer/run/callback.h"
#include "trainer/runtime/blas.h"
#include "trainer/summaries/summary.h"

namespace kd::cli {

config::Node load(const std::string& cfg, const std::vector<std::string>& extras, spdlog::logger* log) {
  if (std::error_code ec; std::filesystem::is_directory(cfg, ec)) {
    throw ConfigError("--cfg=" + cfg + " is a directory; give the experiment's YAML file (e.g. --cfg=" +
                      (std::filesystem::path(cfg) / "config.yaml").string() + ")");
  }
  std::vector<std::string> rest;
  const auto overrides = config::parse_overrides(extras, &rest);
  if (!rest.empty())
    throw ConfigError("unexpected argument \"" + rest.front() + "\" (overrides look like --cfg.key=value)");
  std::vector<std::string> warnings;
  config::Node experiment = config::load_experiment(cfg, overrides, &warnings);
  for (const std::string& warning : warnings) {
    if (log) {
      log->warn("{}", warning);
    } else {
      std::cerr << "warning: " << warning << "\n";
    }
  }
  return experiment;
}

int run_train(const std::string& cfg, const std::vector<std::string>& extras, std::shared_ptr<spdlog::logger> log) {
  train::Trainer trainer(load(cfg, extras, log.get()), std::move(log));
  trainer.train();
  return trainer.exit_code();
}

int run_inspect(const std::string& cfg, const std::vector<std::string>& extras, std::shared_ptr<spdlog::logger> log) {
  train::Trainer trainer(load(cfg, extras, log.get()), std::move(log));
  std::cout << "model:\n" << trainer.describe_model() << "\ncontext after one training step:\n";
  const train::Context ctx = trainer.inspect();
  for (const auto& [path, leaf] : ctx.flatten()) std::cout << "  " << path << "  " << leaf.describe() << "\n";
  std::cout << "\nblas: " << runtime::describe_blas() << "\n  " << trainer.num_threads() << " intra-op thread"
            << (trainer.num_threads() == 1 ? "" : "s") << ": sgemm 1024 x 1024 at "
            << static_cast<int64_t>(runtime::measure_sgemm_gflops()) << " GFLOP/s\n";
  if (auto warning = runtime::blas_warning()) std::cout << "  warning: " << *warning << "\n";
  return 0;
}

namespace {

// The experiment a workdir was trained with, pointed at that workdir.
config::Node workdir_experiment(const std::string& workdir, const std::vector<std::string>& extras) {
  std::vector<std::string> args = extras;
  args.push_back("--cfg.workdir=" + workdir);
  return load(workdir + "/config.yaml", args);
}

}  // namespace

int run_eval(const std::string& workdir, int64_t step, const std::vector<std::string>& extras,
             std::shared_ptr<spdlog::logger> log) {
  // The training data is neither built nor read: it may be large, or gone.
  train::Trainer trainer(workdir_experiment(workdir, extras), std::move(log), train::Trainer::Purpose::kEvaluate);
  trainer.evaluate_checkpoint(step >= 0 ? std::optional<int64_t>(step) : std::nullopt);
  return 0;
}

int run_predict(const PredictCommand& command, const std::vector<std::string>& extras,
                std::shared_ptr<spdlog::logger> log) {
  train::Trainer trainer(workdir_experiment(command.workdir, extras), std::move(log),
                         train::Trainer::Purpose::kEvaluate);
  train::Trainer::PredictOptions options = command.options;
  if (command.step >= 0) options.step = command.step;
  trainer.predict(options);
  return 0;
}

// kd eval --follow: waits for the workdir's experiment (written after a run's first step), then
// evaluates its checkpoints as they appear.
int run_follow(const std::string& workdir, const train::Trainer::FollowOptions& follow,
               const std::vector<std::string>& extras, std::shared_ptr<spdlog::logger> log) {
  if (!(follow.poll_seconds > 0) || !(follow.timeout_seconds >= 0)) {
    throw ConfigError("--poll must be > 0 and --timeout >= 0 (seconds)");
  }
  const std::string config = workdir + "/config.yaml";
  const auto start = std::chrono::steady_clock::now();
  while (!std::filesystem::exists(config)) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= follow.timeout_seconds) {
      throw ConfigError("\"" + config + "\" did not appear within --timeout=" +
                        std::to_string(static_cast<int64_t>(follow.timeout_seconds)) +
                        " s: is a training run writing to --workdir=" + workdir + "?");
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(follow.poll_seconds));
  }
  train::Trainer trainer(workdir_experiment(workdir, extras), std::move(log));
  trainer.follow_checkpoints(follow);
  return 0;
}

namespace {

// The tensors' names with the first of `prefixes` each starts with removed (e.g. "params.", so that
// a PyTorch nn.Module's load_state_dict takes them). ConfigError for a prefix that matches no
// name, a name left empty, and two names made one.
checkpoints::NamedTensors strip_prefixes(checkpoints::NamedTensors tensors, const std::vector<std::string>& prefixes) {
  if (prefixes.empty()) return tensors;
  std::map<std::string, std::string> seen;  // stripped name -> original
  std::set<std::string> used;
  for (auto& [name, t] : tensors) {
    const std::string original = name;
    for (const auto& prefix : prefixes) {
      if (prefix.empty() || name.rfind(prefix, 0) != 0) continue;
      if (name.size() == prefix.size()) {
        throw ConfigError("--strip-prefix=" + prefix + " leaves the tensor " + original + " no name");
      }
      name = name.substr(prefix.size());
      used.insert(prefix);
      break;
    }
    const auto [it, fresh] = seen.emplace(name, original);
    if (!fresh) {
      throw ConfigError("--strip-prefix makes " + it->second + " and " + original + " both \"" + name +
                        "\"; strip less");
    }
  }
  for (const auto& prefix : prefixes) {
    if (!used.count(prefix)) {
      std::set<std::string> firsts;
      for (const auto& [name, original] : seen) firsts.insert(original.substr(0, original.find('.') + 1));
      throw ConfigError("--strip-prefix=" + prefix + " matches no tensor name (they start with " +
                        join_names(std::vector<std::string>(firsts.begin(), firsts.end())) + ")");
    }
  }
  return tensors;
}

}  // namespace

int run_export(const ExportOptions& options) {
  const std::string &workdir = options.workdir, &out = options.out, &format = options.format;
  const int64_t step = options.step;
  if (format != "safetensors" && format != "torch") {
    throw ConfigError("--format must be safetensors or torch, got \"" + format + "\"");
  }
  if (std::error_code ec; std::filesystem::is_directory(out, ec)) {
    throw ConfigError("--out=" + out + " is a directory; give the file to write");
  }
  checkpoints::Checkpointer checkpointer(workdir + "/checkpoints", {});
  // The checkpoint of --step, or the newest that reads (a damaged one is skipped).
  checkpoints::NamedTensors tensors;
  const auto read = [&](const checkpoints::CheckpointInfo& info) {
    if (!info.valid()) throw CorruptionError("checkpoint " + info.path + " is damaged: " + info.problem);
    tensors.clear();
    for (const char* group : {"params", "collections"}) {
      if (std::string(group) == "collections" && !options.collections) continue;
      // --ema: the EMA of the params, under the params' names (it loads where they do).
      const std::string read_group = options.ema && std::string(group) == "params" ? "ema" : group;
      for (auto& [name, t] : checkpoints::read_checkpoint_tensors(info.path, read_group)) {
        tensors.emplace_back(std::string(group) + "." + name, t);
      }
    }
  };
  const auto skip = [&](const checkpoints::CheckpointInfo& info, const std::string& why) {
    std::cerr << options.program << ": warning: checkpoint " << info.path << " is damaged (" << why
              << "); trying the checkpoint before it\n";
  };
  const auto chosen = checkpointer.choose(step >= 0 ? std::optional<int64_t>(step) : std::nullopt, read, skip);
  if (!chosen)
    throw ConfigError("no " +
                      (step >= 0 ? "checkpoint of step " + std::to_string(step) : std::string("valid checkpoint")) +
                      " in \"" + checkpointer.directory() + "\"");
  tensors = strip_prefixes(std::move(tensors), options.strip_prefixes);
  const std::string bytes =
      format == "safetensors"
          ? checkpoints::safetensors_bytes(tensors, {{"format", "pt"}, {"step", std::to_string(chosen->step)}})
          : checkpoints::torch_pickle_bytes(tensors);
  if (options.overwrite) {
    io::write_file_atomically(*io::posix_file_system(), out, bytes);  // replaced whole, or left as it was
  } else {
    if (std::filesystem::exists(out)) {
      throw ConfigError("\"" + out + "\" already exists; add --overwrite to replace it (atomically), or choose " +
                        "another --out");
    }
    checkpoints::write_new_file(out, bytes);
  }
  std::cout << "wrote " << tensors.size() << " tensors of step " << chosen->step << " to " << out << "\n";
  return 0;
}

int run_report(const std::vector<std::string>& workdirs, std::string out, bool overwrite) {
  if (out.empty()) {
    if (workdirs.size() != 1) throw ConfigError("kd report with several --workdir needs --out=FILE.html");
    out = workdirs.front() + "/report.html";
  }
#ifdef KD_WITH_REPORT
  const std::size_t runs = report::write(workdirs, out, overwrite);
  std::cout << "wrote " << out << " (" << runs << " run" << (runs == 1 ? "" : "s") << ")\n";
  return 0;
#else
  throw ConfigError(
      "kd report: this kd was built without the report (-DKD_WITH_REPORT=OFF); configure kd with "
      "-DKD_WITH_REPORT=ON (it needs Debian's libjs-dygraphs) to write " +
      out);
#endif
}

namespace {

template <typename T>
void list(const char* title, const config::Registry<T>& registry, const std::string& only,
          std::vector<std::string>& names) {
  bool header = false;
  for (const auto& name : registry.names()) {
    names.push_back(name);
    if (!only.empty() && name != only) continue;
    if (!header) std::cout << title << ":\n", header = true;
    std::cout << "  " << name << (registry.doc(name).empty() ? "" : "  (" + registry.doc(name) + ")") << "\n";
  }
}

// An experiment's top-level keys (what each one holds), and an eval's `run` strategies, as
// (name, description) in the order `kd configs` prints them.
const std::vector<std::pair<const char*, const char*>>& top_level_keys() {
  static const std::vector<std::pair<const char*, const char*>> keys = {
      {"base", "an experiment file to start from, relative to this one"},
      {"seed", "the run's seed"},
      {"workdir", "where checkpoints, metrics, log and config.yaml go"},
      {"num_train_steps", "steps to train"},
      {"stop_after_steps", "stop this invocation after N more steps (resume later)"},
      {"stop_after_time", "stop this invocation after a time, e.g. 3h30m, 90s"},
      {"log_metrics_every", "steps between metric lines"},
      {"log_summaries_every", "steps between summaries"},
      {"num_threads", "intra-op threads; 0 or auto: measured"},
      {"device", "cpu, cuda, cuda:N"},
      {"precision", "float32, bf16, fp16"},
      {"grad_scaler", "fp16's loss scaling"},
      {"nan_policy", "raise, skip_step or ignore a non-finite loss"},
      {"requeue_signal", "USR1, USR2 or none: stop, save, requeue the SLURM job (before a time limit)"},
      {"allow_config_change", "keys a resumed run may change"},
      {"train_ds", "the training data: a data source, batch_size, transforms, ..."},
      {"model", "the model: a model type and its options, inputs"},
      {"init_transform", "weights to start from: a checkpoint, a safetensors file"},
      {"train_losses", "name: loss"},
      {"train_metrics", "name: metric"},
      {"train_summaries", "name: summary"},
      {"optimizer", "type, learning_rate (a number or a schedule), ..."},
      {"schedules", "name: schedule, logged"},
      {"evals", "name: {ds, run, losses, metrics, summaries, num_batches, use_ema}"},
      {"checkpointer", "save_interval_steps, max_to_keep, ..."},
      {"writer", "metrics.jsonl, TensorBoard, report"},
      {"callbacks", "name: callback"},
      {"profiler", "a trace of some steps"},
      {"distributed", "data parallelism: backend, timeout_s"},
      {"references", "written by kd in a saved config.yaml: the values an experiment wrote as ${...}"},
  };
  return keys;
}

const std::vector<std::pair<const char*, const char*>>& eval_run_types() {
  static const std::vector<std::pair<const char*, const char*>> types = {
      {"EveryNSteps", "n, skip_first=false, once_at_end=false"},
      {"Once", "step, once_at_end=false"},
      {"Final", "at the end of training (also AtEnd)"},
      {"StandaloneEveryCheckpoint", "by `kd eval --follow`, on each checkpoint"},
      {"StandaloneLastCheckpoint", "by `kd eval`, on the last checkpoint"},
      {"(no type)", "every_n_steps=0, once_at_end=(every_n_steps == 0)"},
  };
  return types;
}

}  // namespace

int run_configs(const std::string& name) {
  if (name.empty()) {
    std::cout << "top-level keys (kd config --cfg=FILE shows an experiment's values and defaults):\n";
    for (const auto& [key, what] : top_level_keys()) std::cout << "  " << key << "  (" << what << ")\n";
    std::cout << "eval run strategies (evals.NAME.run: {type: ...}):\n";
    for (const auto& [type, what] : eval_run_types()) std::cout << "  " << type << "  (" << what << ")\n";
  }
  std::vector<std::string> names;  // every registered type
  list("models (model:)", models::registry(), name, names);
  list("losses (train_losses:)", losses::registry(), name, names);
  list("metrics (train_metrics:)", metrics::registry(), name, names);
  list("summaries (train_summaries:)", summaries::registry(), name, names);
  list("schedules (optimizer.learning_rate:, schedules:)", optim::schedule_registry(), name, names);
  list("data sources (train_ds:, evals.*.ds:)", data::source_registry(), name, names);
  list("transforms (train_ds.transforms:)", data::transform_registry(), name, names);
  list("callbacks (callbacks:)", train::callback_registry(), name, names);
  list("optimizers (optimizer.type:; the keys every optimizer has are in trainer/optim/optimizer.h)",
       optim::optimizer_registry(), name, names);
  if (!name.empty() && std::find(names.begin(), names.end(), name) == names.end()) {
    const auto close = nearest(name, names, 1);
    throw ConfigError("no component type \"" + name + "\"" +
                      (close.empty() ? "" : "; did you mean \"" + close.front() + "\"?") +
                      " (kd configs lists them all)");
  }
  return 0;
}

}  // namespace kd::cli
