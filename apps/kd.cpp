// The `kd` command line. Only argument parsing lives here; the work is done by the library.
// Every kd::Error is caught once, below, and printed as one message with exit code 2.
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "trainer/common/error.h"

namespace {

constexpr int kUsageError = 2;

int run_train(const std::string& cfg) {
  std::cerr << "kd train: the training loop is not built yet in this version of kd.\n"
            << "  What exists: kd::Tree path keys, kd::train::Context and TrainState (the library).\n"
            << "  Not yet: TrainStep, YAML experiments, data pipelines, checkpoints.\n"
            << "  The experiment " << cfg << " was not run.\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kd: Kauldron-style training on LibTorch"};
  app.require_subcommand(1);

  std::string cfg;
  auto* train = app.add_subcommand("train", "Train (or resume) an experiment");
  train->add_option("--cfg", cfg, "The experiment YAML file")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUsageError;
  }

  try {
    if (*train) return run_train(cfg);
  } catch (const kd::Error& e) {
    std::cerr << "kd: error: " << e.what() << "\n";
    return kUsageError;
  }
  return 0;
}
