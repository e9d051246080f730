// A user's own data: kd train on a CSV file of theirs, as the README tells.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "tests/e2e/helpers.h"
#include "trainer/io/png.h"
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

TEST_CASE("kd eval neither builds nor reads the training data: it works once the training file is gone") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  for (const char* name : {"train.csv", "test.csv"}) {
    std::ofstream csv(dir / name);
    csv << "x1,x2,label\n";
    for (int i = 0; i < 60; ++i) csv << (i % 2 ? 1.0 : -1.0) + 0.01 * i << "," << 0.5 << "," << i % 2 << "\n";
  }
  std::ofstream(dir / "exp.yaml") << R"(seed: 0
num_train_steps: 20
num_threads: 1
train_ds: {type: Csv, path: train.csv, label_column: label, batch_size: 10}
model: {type: MLP, input_size: 2, hidden_sizes: [8], output_size: 2, inputs: {x: batch.features}}
train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels, logits: preds.logits, labels: batch.label}}
train_metrics: {accuracy: {type: Accuracy, logits: preds.logits, labels: batch.label}}
optimizer: {type: adam, learning_rate: 0.01}
evals:
  test:
    ds: {type: Csv, path: test.csv, label_column: label, batch_size: 30}
)";
  const Result trained =
      run_kd("train --cfg=" + (dir / "exp.yaml").string() + " --cfg.workdir=" + (dir / "wd").string());
  INFO(trained.output);
  REQUIRE(trained.code == 0);
  CHECK_THAT(trained.output, Catch::Contains("train data:"));
  fs::remove(dir / "train.csv");
  const Result eval = run_kd("eval --workdir=" + (dir / "wd").string());
  INFO(eval.output);
  CHECK(eval.code == 0);
  CHECK_THAT(eval.output, Catch::Contains("eval test at step 20") && !Catch::Contains("train data:") &&
                              !Catch::Contains("train.csv"));
  fs::remove_all(dir);
}

TEST_CASE("kd train learns the CNN on a folder of PNG pictures of two sizes, resized as they are read") {
  const fs::path dir = fresh_dir();
  // Two classes: light and dark pictures with noise, of 20 x 16 and 24 x 30 pixels.
  uint32_t state = 7;
  const auto noise = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<int64_t>(state >> 27);  // 0..31
  };
  for (int i = 0; i < 80; ++i) {
    const bool light = i % 2 == 0;
    const int64_t h = i % 4 < 2 ? 20 : 24, w = i % 4 < 2 ? 16 : 30;
    torch::Tensor image = torch::empty({h, w, 3}, torch::kByte);
    auto* p = image.data_ptr<uint8_t>();
    for (int64_t k = 0; k < h * w * 3; ++k) p[k] = static_cast<uint8_t>((light ? 180 : 60) + noise());
    const fs::path file = dir / "pictures" / (light ? "light" : "dark") / (std::to_string(i) + ".png");
    fs::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << kd::io::encode_png(image);
  }
  const std::string ds =
      "{type: ImageFolder, path: pictures, size: [28, 28], channels: 1, test_fraction: 0.25, "
      "split_seed: 1, transforms: [{type: ValueRange, key: image, in_vrange: [0, 255], "
      "vrange: [0, 1]}]";
  std::ofstream(dir / "exp.yaml") << "base: " << std::string(KD_SOURCE_DIR) << "/configs/fashion_mnist_cnn.yaml\n"
                                  << "num_train_steps: 40\nlog_metrics_every: 20\nnum_threads: 1\n"
                                  << "train_ds: " << ds << ", split: train, batch_size: 20}\n"
                                  << "model: {output_size: 2}\n"
                                  << "evals: {test: {ds: " << ds << ", split: test, batch_size: 20}}}\n";
  const Result r = run_kd("train --cfg=" + (dir / "exp.yaml").string() + " --cfg.workdir=" + (dir / "wd").string());
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("ImageFolder") && Catch::Contains("classes dark=0, light=1") &&
                           Catch::Contains("60 examples"));
  double accuracy = 0;
  for (const auto& rec : kd::writers::read_jsonl((dir / "wd" / "metrics.jsonl").string())) {
    if (rec.collection == "test") accuracy = value_of(rec, "metrics/accuracy");
  }
  CHECK(accuracy > 0.9);  // chance is 0.5; the classes are 120 grey levels apart
  fs::remove_all(dir);
}
