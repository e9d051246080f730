// num_threads: auto end to end: the measuring leaves no trace in the run, and a resumed run keeps
// the count its start chose.
#include <algorithm>
#include <fstream>
#include <regex>
#include <string>

#include "tests/e2e/helpers.h"
#include "trainer/runtime/cores.h"

using namespace kd_e2e;

namespace {

const std::string kCnn = std::string(KD_SOURCE_DIR) + "/configs/fashion_mnist_cnn.yaml";

// The CNN (BatchNorm buffers, dropout drawing random numbers, 400k parameters: measured) on
// 1000 examples for 8 steps.
std::string cnn_args(const fs::path& workdir) {
  return "train --cfg=" + kCnn + " --cfg.workdir=" + workdir.string() +
         " --cfg.train_ds.num_examples=1000 --cfg.train_ds.batch_size=50 --cfg.num_train_steps=8"
         " --cfg.log_metrics_every=4 --cfg.evals=null";
}

}  // namespace

TEST_CASE("num_threads auto measures without a trace: the run equals one given that count, and a resume keeps it") {
  const fs::path measured = fresh_dir(), given = fresh_dir(), resumed = fresh_dir();
  const Result a = run_kd(cnn_args(measured));
  INFO(a.output);
  REQUIRE(a.code == 0);
  std::smatch m;
  REQUIRE(std::regex_search(
      a.output, m, std::regex(R"(intra-op threads: (\d+) \(auto; a forward and backward pass measured: 1 thread)")));
  const std::string threads = m[1];

  const Result b = run_kd(cnn_args(given) + " --cfg.num_threads=" + threads);
  INFO(b.output);
  REQUIRE(b.code == 0);
  CHECK_THAT(b.output, !Catch::Contains("measured"));
  CHECK(same_params(measured, given, 8));  // dropout's random numbers and BatchNorm's statistics untouched

  const Result first = run_kd(cnn_args(resumed) + " --cfg.stop_after_steps=4");
  INFO(first.output);
  REQUIRE(first.code == 0);
  REQUIRE(std::regex_search(first.output, m, std::regex(R"(intra-op threads: (\d+) \(auto; a forward)")));
  const std::string chosen = m[1];  // measured again: it may differ from the first run's
  const Result second = run_kd(cnn_args(resumed));
  INFO(second.output);
  REQUIRE(second.code == 0);
  CHECK_THAT(second.output, Catch::Contains("resuming from step 4") &&
                                Catch::Contains("intra-op threads: " + chosen + " (auto: as the run chose") &&
                                !Catch::Contains("measured:"));
  fs::remove_all(measured);
  fs::remove_all(given);
  fs::remove_all(resumed);
}

TEST_CASE(
    "with every core computing, a worker thread is tried and kept only if the steps go faster, changing no value") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  const std::string cores = std::to_string(kd::runtime::available_cores());
  const fs::path experiment = dir / "wide.yaml";
  // 20000 features into 4 outputs: making a batch (10 MB gathered) is a large part of a step.
  // Both ways are timed for up to 500 steps each.
  std::ofstream(experiment) << "train_ds: {type: Synthetic, num_examples: 1024, num_features: 20000, num_classes: 4,"
                               " batch_size: 128}\n"
                               "model: {type: MLP, input_size: 20000, hidden_sizes: [4], output_size: 4,"
                               " inputs: {x: batch.image}}\n"
                               "train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels}}\n"
                               "optimizer: {type: adam, learning_rate: 1e-3}\n"
                               "num_train_steps: 1200\nlog_metrics_every: 300\nnum_threads: " +
                                   cores + "\n";
  const std::string train = "train --cfg=" + experiment.string() + " --cfg.workdir=";
  const Result tried = run_kd(train + (dir / "tried").string());
  INFO(tried.output);
  REQUIRE(tried.code == 0);
  CHECK_THAT(tried.output, Catch::Contains("train data: trying a worker thread from step") &&
                               Catch::Contains("ms a step with a worker, ") &&
                               Catch::Contains("ms with the batches made between steps"));
  const Result given = run_kd(train + (dir / "given").string() + " --cfg.train_ds.prefetch=2");
  INFO(given.output);
  REQUIRE(given.code == 0);
  CHECK_THAT(given.output, !Catch::Contains("prepared between steps") && !Catch::Contains("trying a worker"));
  CHECK(same_params(dir / "tried", dir / "given", 1200));  // whoever makes the batches, they are the same
  fs::remove_all(dir);
}

TEST_CASE(
    "prefetch auto with a core left over: the first steps decide whether a worker thread pays, changing no value") {
  if (kd::runtime::available_cores() < 2) return;  // one core: batches are prepared between steps, above
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  const fs::path experiment = dir / "mlp.yaml";
  std::ofstream(experiment) << "train_ds: {type: Synthetic, num_examples: 4096, num_features: 16, num_classes: 4,"
                               " batch_size: 32}\n"
                               "model: {type: MLP, input_size: 16, hidden_sizes: [64, 64], output_size: 4,"
                               " inputs: {x: batch.image}}\n"
                               "train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels, logits: preds.logits,"
                               " labels: batch.label}}\n"
                               "optimizer: {type: adam, learning_rate: 1e-3}\n"
                               "num_threads: 1\n";
  const std::string train = "train --cfg=" + experiment.string() + " --cfg.workdir=";
  // 16 features: a batch takes microseconds, less than handing it from one thread to another.
  const Result between = run_kd(train + (dir / "small").string() + " --cfg.num_train_steps=600");
  INFO(between.output);
  REQUIRE(between.code == 0);
  CHECK_THAT(between.output, Catch::Contains("train data: prepared between steps (auto: a batch took"));

  // 20000 features into 4 outputs: making a batch (10 MB gathered) is a large part of a step.
  const std::string wide =
      " --cfg.num_train_steps=200 --cfg.log_metrics_every=50 --cfg.train_ds.num_examples=1024"
      " --cfg.train_ds.num_features=20000 --cfg.model.input_size=20000"
      " --cfg.train_ds.batch_size=128 --cfg.model.hidden_sizes=[4]";
  const Result worker = run_kd(train + (dir / "worker").string() + wide);
  INFO(worker.output);
  REQUIRE(worker.code == 0);
  CHECK_THAT(worker.output, Catch::Contains("batches ahead on a worker thread from step"));
  const Result given = run_kd(train + (dir / "given").string() + wide + " --cfg.train_ds.prefetch=0");
  INFO(given.output);
  REQUIRE(given.code == 0);
  CHECK_THAT(given.output, !Catch::Contains("(auto: a batch took"));
  CHECK(same_params(dir / "worker", dir / "given", 200));  // the worker's batches are those made between steps
  fs::remove_all(dir);
}
