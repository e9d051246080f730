// End-to-end tests of what a run reports: exact averages, the end of the data as the end of
// training, log levels, and TensorBoard files as TensorBoard's own reader sees them.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/e2e/helpers.h"

using namespace kd_e2e;

namespace {

const kd::writers::JsonlRecord* find_record(const std::vector<kd::writers::JsonlRecord>& records,
                                            const std::string& collection, int64_t step) {
  for (const auto& r : records) {
    if (r.collection == collection && r.step == step) return &r;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("an eval loss is the average over the test examples, whatever the eval batch size") {
  // 10000 test examples: batches of 1000, or of 3000 with a last one of 1000. A mean of batch
  // means would weigh that last batch 3 times too much.
  std::map<int64_t, std::pair<double, double>> results;  // batch size -> (loss, accuracy)
  for (int64_t batch : {1000, 3000}) {
    const fs::path dir = fresh_dir();
    const Result r = run_kd("train --cfg=" + kMlp + " --cfg.workdir=" + dir.string() +
                            " --cfg.num_train_steps=20 --cfg.num_threads=1 --cfg.train_ds.num_examples=2560"
                            " '--cfg.evals.test.run={type: Final}' --cfg.evals.test.ds.batch_size=" +
                            std::to_string(batch));
    INFO(r.output);
    REQUIRE(r.code == 0);
    const auto records = kd::writers::read_jsonl((dir / "metrics.jsonl").string());
    const auto* test = find_record(records, "test", 20);
    REQUIRE(test != nullptr);
    results[batch] = {value_of(*test, "losses/xent"), value_of(*test, "metrics/accuracy")};
    fs::remove_all(dir);
  }
  INFO("test loss with eval batches of 1000: " << results[1000].first << ", of 3000: " << results[3000].first);
  CHECK(results[3000].first == Approx(results[1000].first).epsilon(1e-6));
  CHECK(results[3000].second == results[1000].second);  // counts of correct answers: exact
}

TEST_CASE("when the data ends before num_train_steps, training ends there: final evals, checkpoint, done") {
  const fs::path dir = fresh_dir();
  // 1000 examples in batches of 100 for 2 epochs: 20 steps, although num_train_steps is 100.
  const std::string args =
      "train --cfg=" + kMlp + " --cfg.workdir=" + dir.string() +
      " --cfg.num_threads=1 --cfg.train_ds.num_examples=1000 --cfg.train_ds.batch_size=100"
      " --cfg.train_ds.num_epochs=2 --cfg.log_metrics_every=8 --cfg.evals.test.ds.num_examples=1000"
      " '--cfg.evals.test.run={type: Final}'";
  const Result r = run_kd(args + " --cfg.num_train_steps=100");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output,
             Catch::Contains("the training data ends after 20 steps") && Catch::Contains("done: step 20 of 20"));
  CHECK(logged_steps(dir, "train") == std::vector<int64_t>{8, 16, 20});
  CHECK(logged_steps(dir, "test") == std::vector<int64_t>{20});
  CHECK(checkpoint_names(dir) == std::vector<std::string>{"ckpt_20"});

  // Without num_train_steps the data alone bounds the run.
  const fs::path unbounded = fresh_dir();
  const Result r2 =
      run_kd(std::regex_replace(args, std::regex(dir.string()), unbounded.string()) + " --cfg.num_train_steps=null");
  INFO(r2.output);
  REQUIRE(r2.code == 0);
  CHECK_THAT(r2.output, Catch::Contains("done: step 20 of 20"));
  CHECK(same_params(dir, unbounded, 20));

  // Neither: a clear error.
  const Result r3 =
      run_kd("train --cfg=" + kMlp + " --cfg.workdir=" + fresh_dir().string() + " --cfg.num_train_steps=null");
  CHECK(r3.code == 2);
  CHECK_THAT(r3.output, Catch::Contains("set num_train_steps, or train_ds.num_epochs"));
  fs::remove_all(dir);
  fs::remove_all(unbounded);
}

TEST_CASE("TensorBoard's own reader loads kd's scalars, images, histograms and texts, each step once after a resume") {
  const fs::path dir = fresh_dir();
  const std::string args =
      "train --cfg=" + kMlp + " --cfg.workdir=" + dir.string() +
      " --cfg.num_threads=1 --cfg.train_ds.num_examples=2560 --cfg.num_train_steps=100 --cfg.log_metrics_every=20"
      " --cfg.checkpointer.save_interval_steps=40 --cfg.checkpointer.max_to_keep=10 --cfg.evals={}"
      " '--cfg.train_summaries={images: {type: ShowImages, images: batch.image, num_images: 2, in_vrange: [0, 1]},"
      " logits: {type: Histogram, tensor: preds.logits}}'";
  const Result r = run_kd(args);
  INFO(r.output);
  REQUIRE(r.code == 0);
  const auto uninterrupted = kd::writers::read_jsonl((dir / "metrics.jsonl").string());
  // As if killed after logging step 100 but before saving it: the last checkpoint is 40's,
  // so the resumed run writes steps 60..100 again.
  fs::remove_all(dir / "checkpoints" / "ckpt_100");
  fs::remove_all(dir / "checkpoints" / "ckpt_80");
  const Result resumed = run_kd(args);
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  REQUIRE_THAT(resumed.output, Catch::Contains("resuming from step 40"));

  const Result read = run_command(std::string(KD_PYTHON) + " " + KD_SOURCE_DIR + "/tests/e2e/read_tensorboard.py " +
                                  (dir / "train").string());
  INFO(read.output);
  REQUIRE(read.code == 0);
  const auto seen = nlohmann::json::parse(read.output);
  const auto steps_of = [](const nlohmann::json& rows) {
    std::vector<int64_t> steps;
    for (const auto& row : rows) steps.push_back(row[0].get<int64_t>());
    return steps;
  };
  const std::vector<int64_t> every_20{20, 40, 60, 80, 100};
  CHECK(steps_of(seen["scalars"]["losses/xent"]) == every_20);
  CHECK(steps_of(seen["scalars"]["metrics/accuracy"]) == every_20);
  CHECK(steps_of(seen["images"]["summaries/images"]) == every_20);
  CHECK(steps_of(seen["histograms"]["summaries/logits"]) == every_20);
  for (const auto& row : seen["images"]["summaries/images"]) {
    CHECK(row[1].get<int>() == 2 * 28 + 1);  // two images side by side, one column apart
    CHECK(row[2].get<int>() == 28);
  }
  for (const auto& row : seen["histograms"]["summaries/logits"]) CHECK(row[1].get<double>() == 128.0 * 10);
  REQUIRE(seen["texts"].contains("config"));
  CHECK(steps_of(seen["texts"]["config"]) == std::vector<int64_t>{0});
  CHECK_THAT(seen["texts"]["config"][0][1].get<std::string>(), Catch::Contains("num_train_steps: 100"));
  // The values TensorBoard shows (float32) are those of metrics.jsonl, which the resumed run
  // rewrote bit for bit.
  const auto records = kd::writers::read_jsonl((dir / "metrics.jsonl").string());
  REQUIRE(records.size() == uninterrupted.size());
  for (const auto& row : seen["scalars"]["losses/xent"]) {
    const int64_t step = row[0].get<int64_t>();
    const auto* now = find_record(records, "train", step);
    const auto* before = find_record(uninterrupted, "train", step);
    REQUIRE(now != nullptr);
    REQUIRE(before != nullptr);
    CHECK(value_of(*now, "losses/xent") == value_of(*before, "losses/xent"));
    CHECK(row[1].get<double>() == Approx(value_of(*now, "losses/xent")).epsilon(1e-6));
  }
  // log.txt lines carry their level.
  const std::string log = read_text(dir / "log.txt");
  CHECK(std::regex_search(log, std::regex("\n[0-9-]+ [0-9:]+ \\[info\\] resuming from step 40")));
  CHECK(std::regex_search(log, std::regex("\n[0-9-]+ [0-9:]+ \\[info\\] done: step 100 of 100")));
  fs::remove_all(dir);
}
