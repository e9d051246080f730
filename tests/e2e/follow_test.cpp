// kd eval --follow beside kd train: the standalone evaluator (Kauldron's StandaloneEveryCheckpoint
// and StandaloneLastCheckpoint).
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "tests/e2e/helpers.h"
#include "trainer/writers/writer.h"

using namespace kd_e2e;

namespace {

// The MLP for 300 steps with a checkpoint every 100, its `test` eval left to kd eval --follow
// and `last` (100 test examples) to its final checkpoint.
std::string followed_mlp(const fs::path& workdir) {
  return "--cfg=" + kMlp + " --cfg.workdir=" + workdir.string() +
         " --cfg.train_ds.num_examples=5000 --cfg.num_train_steps=300 --cfg.log_metrics_every=100"
         " --cfg.checkpointer.save_interval_steps=100 --cfg.num_threads=1"
         " --cfg.evals.test.ds.num_examples=2000 '--cfg.evals.test.run={type: StandaloneEveryCheckpoint}'"
         " --cfg.evals.last.ds.type=FashionMnist --cfg.evals.last.ds.split=test --cfg.evals.last.ds.batch_size=100"
         " --cfg.evals.last.ds.num_examples=100 '--cfg.evals.last.ds.transforms=[{type: ValueRange, key: image, "
         "in_vrange: [0, 255], vrange: [0, 1]}]' '--cfg.evals.last.run={type: StandaloneLastCheckpoint}'";
}

std::map<int64_t, double> accuracies(const fs::path& workdir, const std::string& collection) {
  std::map<int64_t, double> out;
  for (const auto& r : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    if (r.collection == collection) out[r.step] = value_of(r, "metrics/accuracy");
  }
  return out;
}

}  // namespace

TEST_CASE("kd eval --follow evaluates the checkpoints of a run as it trains, and its final one") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  const fs::path workdir = dir / "wd";
  // The follower starts first: it waits for the run's experiment, then for its checkpoints.
  const pid_t follower =
      spawn_kd("eval --workdir=" + workdir.string() + " --follow --poll=0.05 --timeout=120", dir / "follow.log");
  const pid_t trainer = spawn_kd("train " + followed_mlp(workdir), dir / "train.log");
  const int train_code = wait_exit_code(trainer);
  const int follow_code = wait_exit_code(follower);
  INFO("train:\n" << read_text(dir / "train.log") << "\nfollow:\n" << read_text(dir / "follow.log"));
  REQUIRE(train_code == 0);
  REQUIRE(follow_code == 0);
  // The training run left both evals alone.
  CHECK_THAT(read_text(workdir / "log.txt"), !Catch::Contains("eval test") && !Catch::Contains("eval last"));
  const auto test = accuracies(workdir, "test");
  REQUIRE(!test.empty());
  CHECK(test.rbegin()->first == 300);  // the final checkpoint, whatever the follower had time for
  for (const auto& [step, accuracy] : test) CHECK((step == 100 || step == 200 || step == 300));
  CHECK(test.at(300) > 0.70);
  const auto last = accuracies(workdir, "last");
  CHECK(last.size() == 1);
  CHECK(last.count(300) == 1);
  CHECK_THAT(read_text(workdir / "log_eval.txt"), Catch::Contains("eval test at step 300"));

  // The follower's numbers are the checkpoint's: kd eval of step 300 gets the same accuracy, and
  // its record replaces the follower's instead of repeating it.
  const double followed = test.at(300);
  const Result again = run_kd("eval --workdir=" + workdir.string() + " --step=300");
  INFO(again.output);
  REQUIRE(again.code == 0);
  std::vector<double> at_300;
  for (const auto& r : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    if (r.collection == "test" && r.step == 300) at_300.push_back(value_of(r, "metrics/accuracy"));
  }
  REQUIRE(at_300.size() == 1);
  CHECK(at_300[0] == followed);

  // Following the finished run again: its final checkpoint at once, then done.
  const Result finished = run_kd("eval --workdir=" + workdir.string() + " --follow --poll=0.05 --timeout=120");
  INFO(finished.output);
  CHECK(finished.code == 0);
  CHECK_THAT(finished.output, Catch::Contains("eval test at step 300") && !Catch::Contains("eval test at step 200"));
  fs::remove_all(dir);
}

TEST_CASE("kd eval --follow refuses an experiment without standalone evals, and gives up on an idle workdir") {
  const fs::path workdir = fresh_dir();
  const Result trained = run_kd("train " + small_mlp(workdir) + " --cfg.num_train_steps=20 '--cfg.evals={}'");
  REQUIRE(trained.code == 0);
  Result r = run_kd("eval --workdir=" + workdir.string() + " --follow --timeout=5");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("StandaloneEveryCheckpoint") && Catch::Contains("has none"));
  r = run_kd("eval --workdir=" + workdir.string() + " --follow --step=20");
  CHECK(r.code == 2);
  // No run ever writes here: the wait for its experiment ends at --timeout.
  const fs::path empty = fresh_dir();
  r = run_kd("eval --workdir=" + empty.string() + " --follow --poll=0.05 --timeout=0.2");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("did not appear within --timeout"));
  fs::remove_all(workdir);
}

TEST_CASE(
    "kd eval --follow beside a run that saves and prunes at every step calls none damaged and evaluates the last") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  const fs::path workdir = dir / "wd";
  const pid_t trainer = spawn_kd("train --cfg=" + kMlp + " --cfg.workdir=" + workdir.string() +
                                     " --cfg.train_ds.num_examples=5000 --cfg.num_train_steps=600 --cfg.num_threads=1"
                                     " --cfg.log_metrics_every=300 --cfg.evals.test.ds.num_examples=200"
                                     " '--cfg.evals.test.run={type: StandaloneEveryCheckpoint}'"
                                     " --cfg.checkpointer.save_interval_steps=1 --cfg.checkpointer.max_to_keep=1",
                                 dir / "train.log");
  const Result followed = run_kd("eval --workdir=" + workdir.string() + " --follow --poll=0.01 --timeout=120");
  const int train_code = wait_exit_code(trainer);
  INFO("train:\n" << read_text(dir / "train.log") << "\nfollow:\n" << followed.output);
  REQUIRE(train_code == 0);
  CHECK(followed.code == 0);
  CHECK_THAT(followed.output, !Catch::Contains("damaged") && !Catch::Contains("cannot be evaluated") &&
                                  Catch::Contains("followed the run to step 600"));
  CHECK(accuracies(workdir, "test").count(600) == 1);
  fs::remove_all(dir);
}
