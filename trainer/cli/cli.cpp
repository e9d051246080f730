// The `kd` command line: parses the arguments (CLI11) and calls the command's function in
// commands.cpp. Every kd::Error is caught once, below, and printed as one line with exit code 2.
#include "trainer/cli/cli.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>
#include <CLI/CLI.hpp>

#include "trainer/cli/commands_internal.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/common/version.h"
#include "trainer/distributed/launch.h"
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

int run(int argc, char** argv, const Options& options) {
  const std::string& name = options.name;
  CLI::App app{name + ": Kauldron-style training on LibTorch", name};
  app.set_version_flag("--version", name == "kd" ? version() : name + " on " + version());
  app.require_subcommand(1);

  std::string cfg;
  auto* train = app.add_subcommand("train", "Train an experiment: " + name + " train --cfg=FILE [--cfg.key=value ...]");
  train->add_option("--cfg", cfg, "The experiment YAML file")->required();
  train->allow_extras();

  std::string inspect_cfg;
  auto* inspect =
      app.add_subcommand("inspect", "Print the model and every Context path after one step (writes nothing)");
  inspect->add_option("--cfg", inspect_cfg, "The experiment YAML file")->required();
  inspect->allow_extras();

  std::string eval_workdir;
  int64_t eval_step = -1;
  auto* eval = app.add_subcommand("eval", "Evaluate a saved checkpoint with the experiment's evals");
  eval->add_option("--workdir", eval_workdir, "The workdir of a training run")->required();
  auto* eval_step_option =
      eval->add_option("--step", eval_step, "The checkpoint's step (default: the newest valid one)");
  bool eval_follow = false;
  train::Trainer::FollowOptions follow;
  eval->add_flag("--follow", eval_follow,
                 "Evaluate each new checkpoint as a training run writes it, with the evals whose run is "
                 "StandaloneEveryCheckpoint or StandaloneLastCheckpoint, until the run's final checkpoint")
      ->excludes(eval_step_option);
  eval->add_option("--poll", follow.poll_seconds, "--follow: seconds between looks for new checkpoints (default 2)");
  eval->add_option("--timeout", follow.timeout_seconds,
                   "--follow: seconds to wait for something new while no training process holds the workdir "
                   "(default 600)");
  eval->allow_extras();

  ExportOptions export_options;
  export_options.program = name;
  auto* exp = app.add_subcommand("export", "Write a checkpoint's params as safetensors (or a torch.load file)");
  exp->add_option("--workdir", export_options.workdir, "The workdir of a training run")->required();
  exp->add_option("--step", export_options.step, "The checkpoint's step (default: the newest valid one)");
  exp->add_option("--out", export_options.out, "The file to write (never replaced without --overwrite)")->required();
  exp->add_option("--format", export_options.format, "safetensors (default) or torch");
  exp->add_flag("--collections", export_options.collections, "Also write the buffers (e.g. BatchNorm statistics)");
  exp->add_flag("--ema", export_options.ema, "Write the EMA of the params (optimizer.ema_decay) as the params");
  exp->add_flag("--overwrite", export_options.overwrite, "Replace --out if it exists (atomically)");
  exp->add_option("--strip-prefix", export_options.strip_prefixes,
                  "Remove this prefix from the names, e.g. params. (repeatable): the names of a PyTorch "
                  "nn.Module's state_dict");

  distributed::LaunchOptions launch_options;
  double launch_grace_s = 30;
  auto* launch = app.add_subcommand(
      "launch", "Run a command on N local ranks (data-parallel): " + name + " launch --nproc=2 -- train --cfg=FILE");
  // torchrun's spellings too: --nproc-per-node / --nproc_per_node, --master-addr, --master-port.
  launch
      ->add_option("--nproc,--nproc-per-node,--nproc_per_node", launch_options.nproc,
                   "Number of ranks (processes) to start")
      ->required();
  launch->add_option("--master_addr,--master-addr", launch_options.master_addr, "Rendezvous host (default 127.0.0.1)");
  launch->add_option("--master_port,--master-port", launch_options.master_port,
                     "Rendezvous port (default: a free one)");
  launch->add_option("--grace", launch_grace_s,
                     "Seconds a rank may take to stop after SIGTERM before SIGKILL (default 30)");
  launch->prefix_command();  // everything after the options (or after --) is the kd command

  std::vector<std::string> report_workdirs;
  std::string report_out;
  bool report_overwrite = false;
  auto* report = app.add_subcommand(
      "report", "Write one self-contained HTML page of runs: charts, latest values, experiment, model, images");
  report->add_option("--workdir", report_workdirs, "A run's workdir (repeatable: the runs side by side)")->required();
  report->add_option("--out", report_out, "The page to write (default for one workdir: WORKDIR/report.html)");
  report->add_flag("--overwrite", report_overwrite, "Replace --out even when it is not a kd report");

  std::string type_name;
  auto* configs = app.add_subcommand("configs", "List the registered component types, or one type's options");
  configs->add_option("name", type_name, "A component type, e.g. Accuracy");

  // `kd launch [options] -- <kd command>`: what follows "--" is passed to the ranks untouched.
  std::vector<std::string> launched;
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

  try {
    if (*train) return run_train(cfg, train->remaining(), options.log);
    if (*inspect) return run_inspect(inspect_cfg, inspect->remaining(), options.log);
    if (*eval && eval_follow) return run_follow(eval_workdir, follow, eval->remaining(), options.log);
    if (*eval) return run_eval(eval_workdir, eval_step, eval->remaining(), options.log);
    if (*exp) {
      return run_export(export_options);
    }
    if (*configs) return run_configs(type_name);
    if (*report) return run_report(report_workdirs, report_out, report_overwrite);
    if (*launch) {
      launch_options.args = launch->remaining();
      launch_options.args.insert(launch_options.args.end(), launched.begin(), launched.end());
      launch_options.grace = std::chrono::milliseconds(static_cast<int64_t>(launch_grace_s * 1000));
      return distributed::launch(launch_options);
    }
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
  return 0;
}

}  // namespace kd::cli
