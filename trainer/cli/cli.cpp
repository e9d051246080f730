// The `kd` command line: parses the arguments (CLI11) and calls the command's function in
// commands.cpp. Every kd::Error is caught once, below, and printed as one line with exit code 2.
#include "trainer/cli/cli.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>
#include <CLI/CLI.hpp>

#include "trainer/cli/commands_internal.h"
#include "trainer/cli/launch.h"
#include "trainer/cli/sweep.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/common/version.h"
#include "trainer/runtime/blas.h"

// Defined only by the runtimes of instrumented builds (weak: null otherwise).
extern "C" {
[[gnu::weak]] void __asan_init();
[[gnu::weak]] void __tsan_init();
[[gnu::weak]] void __msan_init();
[[gnu::weak]] void __lsan_do_leak_check();
[[gnu::weak]] void __gcov_dump();
[[gnu::weak]] int __llvm_profile_write_file();
}

namespace kd::cli {
namespace {

constexpr int kUserError = 2;

// Seconds in [min, max]: unlike CLI::Range, a NaN is outside (and so is inf, which a duration
// cannot hold).
CLI::Validator seconds_in(double min, double max) {
  const auto text = [](double v) {
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
    return s;
  };
  const std::string range = "[" + text(min) + ", " + text(max) + "]";
  return CLI::Validator(
      [=](std::string& value) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(value, v) || !(v >= min && v <= max)) {
          return "must be a number of seconds in " + range + ", got " + value;
        }
        return {};
      },
      "SECONDS in " + range);
}

bool instrumented() {
  return __asan_init != nullptr || __tsan_init != nullptr || __msan_init != nullptr ||
         __lsan_do_leak_check != nullptr || __gcov_dump != nullptr || __llvm_profile_write_file != nullptr;
}

}  // namespace

void end_process(int code) {
  // A sanitizer checks for leaks at exit, a coverage or profile runtime writes its data then:
  // such a process ends with std::exit.
  if (instrumented()) std::exit(code);
  spdlog::shutdown();
  std::cout.flush();
  std::cerr.flush();
  std::clog.flush();
  std::fflush(nullptr);
  ::_exit(code);
}

std::string version() {
#ifdef KD_WITH_CUDA
  constexpr const char* kBuild = ", CUDA";
#else
  constexpr const char* kBuild = ", CPU";
#endif
  return std::string("kd ") + KD_VERSION + " (LibTorch " + TORCH_VERSION + kBuild + ")";
}

namespace {

// The command line's subcommands and the values their options fill in.
struct CommandLine {
  explicit CommandLine(const std::string& name);
  // Parses argv (`launched`: what followed `kd launch ... --`); nullopt when a command is to run,
  // the exit code otherwise (--help, --version, a mistake).
  std::optional<int> parse(int argc, char** argv);
  // Runs the command parsed, in kd::cli::run's error handling.
  int dispatch(const Options& options);

  std::string name;
  CLI::App app;
  CLI::App *train = nullptr, *inspect = nullptr, *eval = nullptr, *predict = nullptr, *exp = nullptr, *launch = nullptr,
           *report = nullptr, *configs = nullptr, *config = nullptr, *sweep = nullptr;
  std::string cfg, inspect_cfg, config_cfg;
  bool config_json = false;
  SweepOptions sweep_options;
  std::string eval_workdir;
  int64_t eval_step = -1;
  bool eval_follow = false;
  train::Trainer::FollowOptions follow;
  PredictCommand predict_command;
  ExportOptions export_options;
  LaunchOptions launch_options;
  double launch_grace_s = 30;
  std::vector<std::string> launched;
  std::vector<std::string> report_workdirs;
  std::string report_out;
  bool report_overwrite = false;
  std::string type_name;

 private:
  void add_train_and_inspect();
  void add_eval();
  void add_predict();
  void add_export();
  void add_launch();
  void add_report_and_configs();
};

CommandLine::CommandLine(const std::string& program)
    : name(program), app(program + ": Kauldron-style training on LibTorch", program) {
  app.set_version_flag("--version", name == "kd" ? version() : name + " on " + version());
  app.require_subcommand(1);
  add_train_and_inspect();
  add_eval();
  add_predict();
  add_export();
  add_launch();
  add_report_and_configs();
}

void CommandLine::add_train_and_inspect() {
  train = app.add_subcommand("train", "Train an experiment: " + name + " train --cfg=FILE [--cfg.key=value ...]");
  train->add_option("--cfg", cfg, "The experiment YAML file")->required();
  train->allow_extras();
  inspect = app.add_subcommand("inspect", "Print the model and every Context path after one step (writes nothing)");
  inspect->add_option("--cfg", inspect_cfg, "The experiment YAML file")->required();
  inspect->allow_extras();
  config = app.add_subcommand("config",
                              "Print the experiment as a run would use it: every value, defaults included, with "
                              "where it comes from (file:line, override, default); writes nothing");
  config->add_option("--cfg", config_cfg, "The experiment YAML file")->required();
  config->add_flag("--json", config_json, "One JSON array of {key, value, source[, reference]} for tools");
  config->allow_extras();
  sweep = app.add_subcommand("sweep",
                             "Run an experiment at every point of --sweep.KEY=[VALUES] (a product) or of a sweep "
                             "file, each point a kd run in its own workdir under --dir");
  sweep->add_option("--cfg", sweep_options.cfg, "The experiment YAML file")->required();
  sweep->add_option("--sweep-file", sweep_options.sweep_file, "A YAML list of points, each a map of key: value");
  sweep->add_option("--dir", sweep_options.dir, "The sweep's directory (default: the experiment's workdir)");
  sweep->add_option("--jobs", sweep_options.jobs, "Points run at a time (default 1); the cores are shared")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  sweep->add_flag("--slurm", sweep_options.slurm, "Write DIR/sweep.sbatch (a SLURM array job) instead of running");
  sweep->allow_extras();
}

void CommandLine::add_eval() {
  eval = app.add_subcommand("eval", "Evaluate a saved checkpoint with the experiment's evals");
  eval->add_option("--workdir", eval_workdir, "The workdir of a training run")->required();
  auto* step = eval->add_option("--step", eval_step, "The checkpoint's step (default: the newest valid one)")
                   ->check(CLI::NonNegativeNumber);
  eval->add_flag("--follow", eval_follow,
                 "Evaluate each new checkpoint as a training run writes it, with the evals whose run is "
                 "StandaloneEveryCheckpoint or StandaloneLastCheckpoint, until the run's final checkpoint")
      ->excludes(step);
  eval->add_option("--poll", follow.poll_seconds, "--follow: seconds between looks for new checkpoints (default 2)")
      ->check(seconds_in(0.001, 3600));
  eval->add_option("--timeout", follow.timeout_seconds,
                   "--follow: seconds to wait for something new while no training process holds the workdir "
                   "(default 600)")
      ->check(seconds_in(0, 30 * 24 * 3600));
  eval->allow_extras();
}

void CommandLine::add_predict() {
  PredictCommand& c = predict_command;
  predict = app.add_subcommand(
      "predict", "Run a checkpoint's model over a dataset and write the predictions: " + name +
                     " predict --workdir=W --ds=test --out=preds/ (one .npy per path) or --out=preds.jsonl");
  predict->add_option("--workdir", c.workdir, "The workdir of a training run")->required();
  predict->add_option("--step", c.step, "The checkpoint's step (default: the newest valid one)")
      ->check(CLI::NonNegativeNumber);
  predict->add_option("--ds", c.options.ds,
                      "An eval's name (its ds, with its transforms) or train (train_ds); default: the only eval. "
                      "Every example once, in order");
  predict
      ->add_option("--out", c.options.out,
                   "A directory (one .npy per path, row i for example i, and predict.json) or FILE.jsonl (a JSON "
                   "line per example)")
      ->required();
  predict->add_option("--keys", c.options.keys,
                      "Context paths to write, globs allowed (repeatable; default preds.**), e.g. --keys=preds.logits "
                      "--keys=batch.label");
  predict->add_flag("--use_ema,--use-ema", c.options.use_ema, "Use the EMA of the params (optimizer.ema_decay)");
  predict->add_flag("--overwrite", c.options.overwrite, "Replace --out if it exists (atomically)");
  predict->allow_extras();
}

void CommandLine::add_export() {
  ExportOptions& o = export_options;
  o.program = name;
  exp = app.add_subcommand("export", "Write a checkpoint's params as safetensors (or a torch.load file)");
  exp->add_option("--workdir", o.workdir, "The workdir of a training run")->required();
  exp->add_option("--step", o.step, "The checkpoint's step (default: the newest valid one)")
      ->check(CLI::NonNegativeNumber);
  exp->add_option("--out", o.out, "The file to write (never replaced without --overwrite)")->required();
  exp->add_option("--format", o.format, "safetensors (default) or torch");
  exp->add_flag("--collections", o.collections, "Also write the buffers (e.g. BatchNorm statistics)");
  exp->add_flag("--ema", o.ema, "Write the EMA of the params (optimizer.ema_decay) as the params");
  exp->add_flag("--overwrite", o.overwrite, "Replace --out if it exists (atomically)");
  exp->add_option("--strip-prefix", o.strip_prefixes,
                  "Remove this prefix from the names, e.g. params. (repeatable): the names of a PyTorch "
                  "nn.Module's state_dict");
}

void CommandLine::add_launch() {
  launch = app.add_subcommand(
      "launch", "Run a command on N local ranks (data-parallel): " + name + " launch --nproc=2 -- train --cfg=FILE");
  // torchrun's spellings too: --nproc-per-node / --nproc_per_node, --master-addr, --master-port.
  launch
      ->add_option("--nproc,--nproc-per-node,--nproc_per_node", launch_options.nproc,
                   "Number of ranks (processes) to start")
      ->required()
      ->check(CLI::Range(1, 1024));
  launch->add_option("--nnodes", launch_options.nnodes, "Nodes of the job, one kd launch each (default 1)")
      ->check(CLI::Range(1, 65536));
  launch->add_option("--node-rank,--node_rank", launch_options.node_rank, "This node's rank in [0, --nnodes)")
      ->check(CLI::Range(0, 65535));
  launch->add_option("--master_addr,--master-addr", launch_options.master_addr, "Rendezvous host (default 127.0.0.1)");
  launch->add_option("--master_port,--master-port", launch_options.master_port, "Rendezvous port (default: a free one)")
      ->check(CLI::Range(1, 65535));
  launch
      ->add_option("--grace", launch_grace_s,
                   "Seconds a rank may take to stop after SIGTERM before SIGKILL (default 30)")
      ->check(seconds_in(0, 24 * 3600));
  launch->prefix_command();  // everything after the options (or after --) is the kd command
}

void CommandLine::add_report_and_configs() {
  report = app.add_subcommand(
      "report", "Write one self-contained HTML page of runs: charts, latest values, experiment, model, images");
  report->add_option("--workdir", report_workdirs, "A run's workdir (repeatable: the runs side by side)")->required();
  report->add_option("--out", report_out, "The page to write (default for one workdir: WORKDIR/report.html)");
  report->add_flag("--overwrite", report_overwrite, "Replace --out even when it is not a kd report");
  configs = app.add_subcommand("configs", "List the registered component types, or one type's options");
  configs->add_option("name", type_name, "A component type, e.g. Accuracy");
}

std::optional<int> CommandLine::parse(int argc, char** argv) {
  // `kd launch [options] -- <kd command>`: what follows "--" is passed to the ranks untouched.
  if (argc > 1 && std::string(argv[1]) == "launch") {
    for (int i = 2; i < argc; ++i) {
      if (std::string(argv[i]) == "--") {
        launched.assign(argv + i + 1, argv + argc);
        argc = i;
        break;
      }
    }
  }
  // A misspelt subcommand: suggest the nearest instead of CLI11's "a subcommand is required".
  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> names;
    for (const auto* sub : app.get_subcommands({})) names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), argv[1]) == names.end()) {
      const auto close = nearest(argv[1], names, 1);
      std::cerr << name << ": error: unknown command \"" << argv[1] << "\""
                << (close.empty() ? "" : ". Did you mean \"" + close.front() + "\"?")
                << " (commands: " << join_names(names) << "; " << name << " --help)\n";
      return kUserError;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUserError;
  }
  return std::nullopt;
}

int CommandLine::dispatch(const Options& options) {
  if (*train) return run_train(cfg, train->remaining(), options.log);
  if (*inspect) return run_inspect(inspect_cfg, inspect->remaining(), options.log);
  if (*config) return run_config(config_cfg, config->remaining(), config_json, options.log);
  if (*sweep) {
    sweep_options.args = sweep->remaining();
    return cli::sweep(sweep_options);
  }
  if (*eval && eval_follow) return run_follow(eval_workdir, follow, eval->remaining(), options.log);
  if (*eval) return run_eval(eval_workdir, eval_step, eval->remaining(), options.log);
  if (*predict) return run_predict(predict_command, predict->remaining(), options.log);
  if (*exp) return run_export(export_options);
  if (*configs) return run_configs(type_name);
  if (*report) return run_report(report_workdirs, report_out, report_overwrite);
  if (*launch) {
    launch_options.args = launch->remaining();
    launch_options.args.insert(launch_options.args.end(), launched.begin(), launched.end());
    launch_options.grace = std::chrono::milliseconds(static_cast<int64_t>(launch_grace_s * 1000));
    return cli::launch(launch_options);
  }
  return 0;
}

}  // namespace

int run(int argc, char** argv, const Options& options) {
  CommandLine command_line(options.name);
  if (const std::optional<int> code = command_line.parse(argc, argv)) return *code;
  const std::string& name = options.name;
  try {
    return command_line.dispatch(options);
  } catch (const Error& e) {
    std::cerr << name << ": error: " << e.what() << "\n";
    return kUserError;
  } catch (const c10::Error& e) {
    // The first line only: LibTorch's backtrace means nothing to a user (KD_DEBUG=1 shows it).
    const bool debug = std::getenv("KD_DEBUG") != nullptr;
    std::cerr << name << ": LibTorch error: " << (debug ? e.what() : e.msg().substr(0, e.msg().find('\n'))) << "\n";
    return kUserError;
  } catch (const std::exception& e) {
    std::cerr << name << ": error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace kd::cli
