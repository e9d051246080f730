// The `kd` command line. Only argument parsing lives here; the work is done by the library.
// Every kd::Error is caught once, below, and printed as one message with exit code 2.
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "trainer/common/error.h"
#include "trainer/config/experiment.h"
#include "trainer/data/source.h"
#include "trainer/data/transforms.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/models/model.h"
#include "trainer/optim/schedules.h"
#include "trainer/summaries/summary.h"
#include "trainer/train/callback.h"
#include "trainer/train/trainer.h"

namespace {

constexpr int kUserError = 2;

kd::config::Node load(const std::string& cfg, const std::vector<std::string>& extras) {
  std::vector<std::string> rest;
  const auto overrides = kd::config::parse_overrides(extras, &rest);
  if (!rest.empty()) throw kd::ConfigError("unexpected argument \"" + rest.front() + "\" (overrides look like --cfg.key=value)");
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
  if (name.empty()) {
    std::cout << "optimizers (optimizer.type:):\n  sgd, adam, adamw, rmsprop, adagrad  (see trainer/optim/optimizer.h)\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kd: Kauldron-style training on LibTorch"};
  app.require_subcommand(1);

  std::string cfg;
  auto* train = app.add_subcommand("train", "Train an experiment: kd train --cfg=FILE [--cfg.key=value ...]");
  train->add_option("--cfg", cfg, "The experiment YAML file")->required();
  train->allow_extras();

  std::string inspect_cfg;
  auto* inspect = app.add_subcommand("inspect", "Print the model and every Context path after one step (writes nothing)");
  inspect->add_option("--cfg", inspect_cfg, "The experiment YAML file")->required();
  inspect->allow_extras();

  std::string type_name;
  auto* configs = app.add_subcommand("configs", "List the registered component types, or one type's options");
  configs->add_option("name", type_name, "A component type, e.g. Accuracy");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUserError;
  }

  try {
    if (*train) return run_train(cfg, train->remaining());
    if (*inspect) return run_inspect(inspect_cfg, inspect->remaining());
    if (*configs) return run_configs(type_name);
  } catch (const kd::Error& e) {
    std::cerr << "kd: error: " << e.what() << "\n";
    return kUserError;
  } catch (const c10::Error& e) {
    std::cerr << "kd: LibTorch error: " << e.msg().substr(0, e.msg().find('\n')) << "\n";
    return 1;
  }
  return 0;
}
