// The `kd` command line. Only argument parsing lives here; the work is done by the library.
// Every kd::Error is caught once, below, and printed as one message with exit code 2.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <c10/util/Exception.h>
#include <CLI/CLI.hpp>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/export.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/config/experiment.h"
#include "trainer/data/source.h"
#include "trainer/data/transforms.h"
#include "trainer/distributed/launch.h"
#include "trainer/io/file_system.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer_type.h"
#include "trainer/optim/schedules.h"
#include "trainer/run/callback.h"
#include "trainer/run/trainer.h"
#include "trainer/runtime/blas.h"
#include "trainer/summaries/summary.h"

namespace {

constexpr int kUserError = 2;

kd::config::Node load(const std::string& cfg, const std::vector<std::string>& extras) {
  if (std::error_code ec; std::filesystem::is_directory(cfg, ec)) {
    throw kd::ConfigError("--cfg=" + cfg + " is a directory; give the experiment's YAML file (e.g. --cfg=" +
                          (std::filesystem::path(cfg) / "config.yaml").string() + ")");
  }
  std::vector<std::string> rest;
  const auto overrides = kd::config::parse_overrides(extras, &rest);
  if (!rest.empty())
    throw kd::ConfigError("unexpected argument \"" + rest.front() + "\" (overrides look like --cfg.key=value)");
  return kd::config::load_experiment(cfg, overrides);
}

int run_train(const std::string& cfg, const std::vector<std::string>& extras) {
  kd::train::Trainer trainer(load(cfg, extras));
  trainer.train();
  return 0;
}

int run_inspect(const std::string& cfg, const std::vector<std::string>& extras) {
  kd::train::Trainer trainer(load(cfg, extras));
  std::cout << "model:\n" << trainer.describe_model() << "\ncontext after one training step:\n";
  const kd::train::Context ctx = trainer.inspect();
  for (const auto& [path, leaf] : ctx.flatten()) std::cout << "  " << path << "  " << leaf.describe() << "\n";
  std::cout << "\nblas: " << kd::runtime::describe_blas() << "\n  " << trainer.num_threads() << " intra-op thread"
            << (trainer.num_threads() == 1 ? "" : "s") << ": sgemm 1024 x 1024 at "
            << static_cast<int64_t>(kd::runtime::measure_sgemm_gflops()) << " GFLOP/s\n";
  if (auto warning = kd::runtime::blas_warning()) std::cout << "  warning: " << *warning << "\n";
  return 0;
}

// The experiment a workdir was trained with, pointed at that workdir.
kd::config::Node workdir_experiment(const std::string& workdir, const std::vector<std::string>& extras) {
  std::vector<std::string> args = extras;
  args.push_back("--cfg.workdir=" + workdir);
  return load(workdir + "/config.yaml", args);
}

int run_eval(const std::string& workdir, int64_t step, const std::vector<std::string>& extras) {
  kd::train::Trainer trainer(workdir_experiment(workdir, extras));
  trainer.evaluate_checkpoint(step >= 0 ? std::optional<int64_t>(step) : std::nullopt);
  return 0;
}

// kd eval --follow: waits for the workdir's experiment (written after a run's first step), then
// evaluates its checkpoints as they appear.
int run_follow(const std::string& workdir, const kd::train::Trainer::FollowOptions& follow,
               const std::vector<std::string>& extras) {
  if (!(follow.poll_seconds > 0) || !(follow.timeout_seconds >= 0)) {
    throw kd::ConfigError("--poll must be > 0 and --timeout >= 0 (seconds)");
  }
  const std::string config = workdir + "/config.yaml";
  const auto start = std::chrono::steady_clock::now();
  while (!std::filesystem::exists(config)) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= follow.timeout_seconds) {
      throw kd::ConfigError("\"" + config + "\" did not appear within --timeout=" +
                            std::to_string(static_cast<int64_t>(follow.timeout_seconds)) +
                            " s: is a training run writing to --workdir=" + workdir + "?");
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(follow.poll_seconds));
  }
  kd::train::Trainer trainer(workdir_experiment(workdir, extras));
  trainer.follow_checkpoints(follow);
  return 0;
}

// The tensors' names with the first of `prefixes` each starts with removed (e.g. "params.", so that
// a PyTorch nn.Module's load_state_dict takes them). ConfigError for a prefix that matches no
// name, a name left empty, and two names made one.
kd::checkpoints::NamedTensors strip_prefixes(kd::checkpoints::NamedTensors tensors,
                                             const std::vector<std::string>& prefixes) {
  if (prefixes.empty()) return tensors;
  std::map<std::string, std::string> seen;  // stripped name -> original
  std::set<std::string> used;
  for (auto& [name, t] : tensors) {
    const std::string original = name;
    for (const auto& prefix : prefixes) {
      if (prefix.empty() || name.rfind(prefix, 0) != 0) continue;
      if (name.size() == prefix.size()) {
        throw kd::ConfigError("--strip-prefix=" + prefix + " leaves the tensor " + original + " no name");
      }
      name = name.substr(prefix.size());
      used.insert(prefix);
      break;
    }
    const auto [it, fresh] = seen.emplace(name, original);
    if (!fresh) {
      throw kd::ConfigError("--strip-prefix makes " + it->second + " and " + original + " both \"" + name +
                            "\"; strip less");
    }
  }
  for (const auto& prefix : prefixes) {
    if (!used.count(prefix)) {
      std::set<std::string> firsts;
      for (const auto& [name, original] : seen) firsts.insert(original.substr(0, original.find('.') + 1));
      throw kd::ConfigError("--strip-prefix=" + prefix + " matches no tensor name (they start with " +
                            kd::join_names(std::vector<std::string>(firsts.begin(), firsts.end())) + ")");
    }
  }
  return tensors;
}

int run_export(const std::string& workdir, int64_t step, const std::string& out, const std::string& format,
               bool collections, bool ema, bool overwrite, const std::vector<std::string>& prefixes) {
  if (format != "safetensors" && format != "torch") {
    throw kd::ConfigError("--format must be safetensors or torch, got \"" + format + "\"");
  }
  if (std::error_code ec; std::filesystem::is_directory(out, ec)) {
    throw kd::ConfigError("--out=" + out + " is a directory; give the file to write");
  }
  kd::checkpoints::Checkpointer checkpointer(workdir + "/checkpoints", {});
  // The checkpoint of --step, or the newest that reads (a damaged one is skipped).
  kd::checkpoints::NamedTensors tensors;
  const auto read = [&](const kd::checkpoints::CheckpointInfo& info) {
    if (!info.valid()) throw kd::CorruptionError("checkpoint " + info.path + " is damaged: " + info.problem);
    tensors.clear();
    for (const char* group : {"params", "collections"}) {
      if (std::string(group) == "collections" && !collections) continue;
      // --ema: the EMA of the params, under the params' names (it loads where they do).
      const std::string read_group = ema && std::string(group) == "params" ? "ema" : group;
      for (auto& [name, t] : kd::checkpoints::read_checkpoint_tensors(info.path, read_group)) {
        tensors.emplace_back(std::string(group) + "." + name, t);
      }
    }
  };
  const auto skip = [](const kd::checkpoints::CheckpointInfo& info, const std::string& why) {
    std::cerr << "kd: warning: checkpoint " << info.path << " is damaged (" << why
              << "); trying the checkpoint before it\n";
  };
  const auto chosen = kd::checkpoints::Checkpointer::choose(
      checkpointer.probe(), step >= 0 ? std::optional<int64_t>(step) : std::nullopt, read, skip);
  if (!chosen)
    throw kd::ConfigError("no " +
                          (step >= 0 ? "checkpoint of step " + std::to_string(step) : std::string("valid checkpoint")) +
                          " in \"" + checkpointer.directory() + "\"");
  tensors = strip_prefixes(std::move(tensors), prefixes);
  const std::string bytes =
      format == "safetensors"
          ? kd::checkpoints::safetensors_bytes(tensors, {{"format", "pt"}, {"step", std::to_string(chosen->step)}})
          : kd::checkpoints::torch_pickle_bytes(tensors);
  if (overwrite) {
    kd::io::write_file_atomically(*kd::io::posix_file_system(), out, bytes);  // replaced whole, or left as it was
  } else {
    kd::checkpoints::write_new_file(out, bytes);
  }
  std::cout << "wrote " << tensors.size() << " tensors of step " << chosen->step << " to " << out << "\n";
  return 0;
}

template <typename T>
void list(const char* title, const kd::config::Registry<T>& registry, const std::string& only) {
  bool header = false;
  for (const auto& name : registry.names()) {
    if (!only.empty() && name != only) continue;
    if (!header) std::cout << title << ":\n", header = true;
    std::cout << "  " << name << (registry.doc(name).empty() ? "" : "  (" + registry.doc(name) + ")") << "\n";
  }
}

int run_configs(const std::string& name) {
  list("models (model:)", kd::models::registry(), name);
  list("losses (train_losses:)", kd::losses::registry(), name);
  list("metrics (train_metrics:)", kd::metrics::registry(), name);
  list("summaries (train_summaries:)", kd::summaries::registry(), name);
  list("schedules (optimizer.learning_rate:, schedules:)", kd::optim::schedule_registry(), name);
  list("data sources (train_ds:, evals.*.ds:)", kd::data::source_registry(), name);
  list("transforms (train_ds.transforms:)", kd::data::transform_registry(), name);
  list("callbacks (callbacks:)", kd::train::callback_registry(), name);
  list("optimizers (optimizer.type:; the keys every optimizer has are in trainer/optim/optimizer.h)",
       kd::optim::optimizer_registry(), name);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything else: OpenBLAS chose its kernels when it loaded; a narrower choice than the
  // CPU's is fixed by starting again with OPENBLAS_CORETYPE set (never over a value set).
  kd::runtime::reexec_with_better_blas(argv);
  CLI::App app{"kd: Kauldron-style training on LibTorch"};
  app.require_subcommand(1);

  std::string cfg;
  auto* train = app.add_subcommand("train", "Train an experiment: kd train --cfg=FILE [--cfg.key=value ...]");
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
  kd::train::Trainer::FollowOptions follow;
  eval->add_flag("--follow", eval_follow,
                 "Evaluate each new checkpoint as a training run writes it, with the evals whose run is "
                 "StandaloneEveryCheckpoint or StandaloneLastCheckpoint, until the run's final checkpoint")
      ->excludes(eval_step_option);
  eval->add_option("--poll", follow.poll_seconds, "--follow: seconds between looks for new checkpoints (default 2)");
  eval->add_option("--timeout", follow.timeout_seconds,
                   "--follow: seconds to wait for something new while no training process holds the workdir "
                   "(default 600)");
  eval->allow_extras();

  std::string export_workdir, export_out, export_format = "safetensors";
  int64_t export_step = -1;
  bool export_collections = false;
  auto* exp = app.add_subcommand("export", "Write a checkpoint's params as safetensors (or a torch.load file)");
  exp->add_option("--workdir", export_workdir, "The workdir of a training run")->required();
  exp->add_option("--step", export_step, "The checkpoint's step (default: the newest valid one)");
  exp->add_option("--out", export_out, "The file to write (never replaced without --overwrite)")->required();
  exp->add_option("--format", export_format, "safetensors (default) or torch");
  exp->add_flag("--collections", export_collections, "Also write the buffers (e.g. BatchNorm statistics)");
  bool export_ema = false;
  exp->add_flag("--ema", export_ema, "Write the EMA of the params (optimizer.ema_decay) as the params");
  bool export_overwrite = false;
  exp->add_flag("--overwrite", export_overwrite, "Replace --out if it exists (atomically)");
  std::vector<std::string> export_prefixes;
  exp->add_option("--strip-prefix", export_prefixes,
                  "Remove this prefix from the names, e.g. params. (repeatable): the names of a PyTorch "
                  "nn.Module's state_dict");

  kd::distributed::LaunchOptions launch_options;
  double launch_grace_s = 30;
  auto* launch = app.add_subcommand(
      "launch", "Run a kd command on N local ranks (data-parallel): kd launch --nproc=2 -- train --cfg=FILE");
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
      const auto close = kd::nearest(argv[1], names, 1);
      std::cerr << "kd: error: unknown command \"" << argv[1] << "\""
                << (close.empty() ? "" : ". Did you mean \"" + close.front() + "\"?")
                << " (commands: " << kd::join_names(names) << "; kd --help)\n";
      return kUserError;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUserError;
  }

  try {
    if (*train) return run_train(cfg, train->remaining());
    if (*inspect) return run_inspect(inspect_cfg, inspect->remaining());
    if (*eval && eval_follow) return run_follow(eval_workdir, follow, eval->remaining());
    if (*eval) return run_eval(eval_workdir, eval_step, eval->remaining());
    if (*exp) {
      return run_export(export_workdir, export_step, export_out, export_format, export_collections, export_ema,
                        export_overwrite, export_prefixes);
    }
    if (*configs) return run_configs(type_name);
    if (*launch) {
      launch_options.args = launch->remaining();
      launch_options.args.insert(launch_options.args.end(), launched.begin(), launched.end());
      launch_options.grace = std::chrono::milliseconds(static_cast<int64_t>(launch_grace_s * 1000));
      return kd::distributed::launch(launch_options);
    }
  } catch (const kd::Error& e) {
    std::cerr << "kd: error: " << e.what() << "\n";
    return kUserError;
  } catch (const c10::Error& e) {
    // The first line only: LibTorch's backtrace means nothing to a user (KD_DEBUG=1 shows it).
    const bool debug = std::getenv("KD_DEBUG") != nullptr;
    std::cerr << "kd: LibTorch error: " << (debug ? e.what() : e.msg().substr(0, e.msg().find('\n'))) << "\n";
    return kUserError;
  } catch (const std::exception& e) {
    std::cerr << "kd: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
