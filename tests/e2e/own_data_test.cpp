// A user's own data: kd train on a CSV file of theirs, as the README tells.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "tests/e2e/helpers.h"
#include "trainer/writers/writer.h"

using namespace kd_e2e;

TEST_CASE("kd train learns a CSV file with word labels, split into train and test, found beside its experiment") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir / "data");
  // Three well-separated clusters of 2-D points, labelled by name, as pandas writes them (with
  // its unnamed index column first).
  std::ofstream csv(dir / "data" / "points.csv");
  csv << ",x1,x2,kind\n";
  uint32_t state = 12345;
  const auto noise = [&] {  // uniform in [-1, 1), the same everywhere
    state = state * 1664525u + 1013904223u;
    return static_cast<double>(state >> 8) / static_cast<double>(1u << 23) - 1.0;
  };
  const char* kinds[] = {"circle", "square", "triangle"};
  for (int i = 0; i < 300; ++i) {
    const int k = i % 3;
    csv << i << "," << 4.0 * k + noise() << "," << (k == 1 ? 3.0 : 0.0) + noise() << "," << kinds[k] << "\n";
  }
  csv.close();
  std::ofstream(dir / "exp.yaml") << R"(seed: 0
workdir: wd
num_train_steps: 200
log_metrics_every: 100
num_threads: 1
train_ds: {type: Csv, path: data/points.csv, label_column: kind, split: train, test_fraction: 0.2, batch_size: 32}
model: {type: MLP, input_size: 3, hidden_sizes: [32], output_size: 3, inputs: {x: batch.features}}
train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels, logits: preds.logits, labels: batch.label}}
train_metrics: {accuracy: {type: Accuracy, logits: preds.logits, labels: batch.label}}
optimizer: {type: adam, learning_rate: 0.01}
evals:
  test:
    ds: {type: Csv, path: data/points.csv, label_column: kind, split: test, test_fraction: 0.2, batch_size: 60}
)";
  // Run from another directory: the data is found beside the experiment; the workdir is where
  // kd runs (workdir is not a path key).
  const Result r = run_command("cd / && " + std::string(KD_BINARY) + " train --cfg=" + (dir / "exp.yaml").string() +
                                   " --cfg.workdir=" + (dir / "wd").string(),
                               /*with_stderr=*/true);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("classes circle=0, square=1, triangle=2") && Catch::Contains("split train") &&
                           Catch::Contains("240 examples"));
  CHECK_THAT(r.output, Catch::Contains("the first column has no name"));  // pandas' index, read as a feature
  double accuracy = 0;
  for (const auto& rec : kd::writers::read_jsonl((dir / "wd" / "metrics.jsonl").string())) {
    if (rec.collection == "test") accuracy = value_of(rec, "metrics/accuracy");
  }
  CHECK(accuracy > 0.9);  // chance is 1/3; the clusters are 4 apart with noise of 1
  // The saved experiment names the file absolutely: kd eval finds it from anywhere.
  CHECK_THAT(read_text(dir / "wd" / "config.yaml"), Catch::Contains((dir / "data" / "points.csv").string()));
  const Result eval = run_command("cd / && " + std::string(KD_BINARY) + " eval --workdir=" + (dir / "wd").string(),
                                  /*with_stderr=*/true);
  INFO(eval.output);
  CHECK(eval.code == 0);
  fs::remove_all(dir);
}
