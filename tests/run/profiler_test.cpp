#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/config/experiment.h"
#include "trainer/run/trainer.h"

namespace fs = std::filesystem;

namespace {

using kd::testing::fresh_dir;

kd::config::Node experiment(const fs::path& dir, const std::string& profiler) {
  fs::create_directories(dir);
  std::ofstream(dir / "exp.yaml") << R"(
seed: 0
num_train_steps: 10
log_metrics_every: 5
num_threads: 1
train_ds: {type: Synthetic, num_examples: 64, num_features: 8, num_classes: 3, batch_size: 16}
model: {type: MLP, input_size: 8, hidden_sizes: [16], output_size: 3}
train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels}}
optimizer: {type: adam, learning_rate: 0.01}
)";
  return kd::config::load_experiment((dir / "exp.yaml").string(),
                                     {{"workdir", (dir / "wd").string()}, {"profiler", profiler}});
}

std::set<std::string> profiles(const fs::path& dir) {
  std::set<std::string> out;
  if (!fs::exists(dir / "wd" / "profile")) return out;
  for (const auto& e : fs::directory_iterator(dir / "wd" / "profile")) out.insert(e.path().filename().string());
  return out;
}

// The names of a Chrome trace's events (a JSON array, or an object with "traceEvents").
std::set<std::string> event_names(const fs::path& file) {
  std::ifstream in(file);
  const nlohmann::json trace = nlohmann::json::parse(in);
  const nlohmann::json& events = trace.is_array() ? trace : trace.at("traceEvents");
  std::set<std::string> names;
  for (const auto& e : events) {
    if (e.contains("name")) names.insert(e.at("name").get<std::string>());
  }
  return names;
}

}  // namespace

TEST_CASE("the profiler writes Chrome traces of the chosen steps, holding the step's operations") {
  const fs::path dir = fresh_dir();
  kd::train::Trainer(experiment(dir, "{first_profile: 2, num_profile_steps: 2, every_steps: 5, every_secs: 0}"))
      .train();
  CHECK(profiles(dir) == std::set<std::string>{"steps_2-3.json", "steps_7-8.json"});
  const auto names = event_names(dir / "wd" / "profile" / "steps_2-3.json");
  // The MLP's layers (a matrix product) and the loss's backward are among the step's operations.
  bool matmul = false;
  for (const auto& n : names) matmul = matmul || n.find("mm") != std::string::npos;
  CHECK(matmul);
  CHECK(names.size() > 10);
  fs::remove_all(dir);
}

TEST_CASE("a profile the run ends inside is written at the end; no profiler section, no profile") {
  const fs::path dir = fresh_dir();
  kd::train::Trainer(experiment(dir, "{first_profile: 8, num_profile_steps: 5}")).train();
  CHECK(profiles(dir) == std::set<std::string>{"steps_8-9.json"});
  fs::remove_all(dir);
  kd::train::Trainer(experiment(dir, "null")).train();
  CHECK(profiles(dir).empty());
  fs::remove_all(dir);
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(dir, "{first_profile: 2, num_steps: 3}")),
                    Catch::Contains("unknown key \"num_steps\""));
  CHECK_THROWS_WITH(kd::train::Trainer(experiment(dir, "{num_profile_steps: 5, every_steps: 2}")),
                    Catch::Contains("every_steps"));
  fs::remove_all(dir);
}
