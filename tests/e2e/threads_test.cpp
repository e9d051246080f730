// num_threads: auto end to end: the measuring leaves no trace in the run, and a resumed run keeps
// the count its start chose.
#include <algorithm>
#include <regex>
#include <string>

#include "tests/e2e/helpers.h"

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

TEST_CASE("with every core computing, batches are prepared between steps unless train_ds.prefetch says otherwise") {
  const fs::path dir = fresh_dir();
  const std::string cores = std::to_string(std::max(1u, std::thread::hardware_concurrency()));
  const Result r = run_kd(cnn_args(dir) + " --cfg.num_threads=" + cores + " --cfg.num_train_steps=2");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("train data: prepared between steps"));
  fs::remove_all(dir);
  const Result kept =
      run_kd(cnn_args(dir) + " --cfg.num_threads=" + cores + " --cfg.num_train_steps=2 --cfg.train_ds.prefetch=2");
  INFO(kept.output);
  REQUIRE(kept.code == 0);
  CHECK_THAT(kept.output, !Catch::Contains("prepared between steps"));
  fs::remove_all(dir);
}
