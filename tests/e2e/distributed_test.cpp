// End-to-end tests of data-parallel training: real `kd` processes talking over loopback.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <regex>
#include <sstream>

#include "tests/e2e/helpers.h"
#include "trainer/distributed/distributed.h"

using namespace kd_e2e;

namespace {

// The MLP flagship on every training example, 100 steps of the global batch of 128, tested
// on 2000 test examples at the end.
std::string flagship_100(const fs::path& workdir, const std::string& extra = "") {
  return "train --cfg=" + kMlp + " --cfg.workdir=" + workdir.string() +
         " --cfg.num_train_steps=100 --cfg.log_metrics_every=50 --cfg.num_threads=1"
         " --cfg.evals.test.ds.num_examples=2000 '--cfg.evals.test.run={type: Final}' " +
         extra;
}

// Why 2 ranks are compared with `accumulate_steps: 2`, not with one process on the whole batch:
// both cut the global batch of 128 into the same two halves, compute each half's gradient with
// the same kernels on the same shapes, and average the two (a sum and a halving, both exact in
// floating point), so they agree bit for bit on any CPU. One process on the whole batch sums the
// 128 examples in another order, and 100 Adam steps amplify that rounding to differences of
// 1e-3..1e-1 that depend on the CPU's BLAS kernels: no bound on that comparison holds everywhere.
constexpr const char* kSameSplit = "--cfg.optimizer.accumulate_steps=2";

const kd::writers::JsonlRecord& record(const std::vector<kd::writers::JsonlRecord>& records,
                                       const std::string& collection, int64_t step) {
  const kd::writers::JsonlRecord* found = nullptr;
  for (const auto& r : records) {
    if (r.collection == collection && r.step == step) {
      REQUIRE(found == nullptr);  // written once, by rank 0
      found = &r;
    }
  }
  REQUIRE(found != nullptr);
  return *found;
}

std::string rank_env(int rank, int port) {
  return "RANK=" + std::to_string(rank) + " LOCAL_RANK=" + std::to_string(rank) +
         " WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port);
}

// The pids of the 2 ranks, from kd launch's first line ("... (pids 123, 124) ...").
std::vector<pid_t> rank_pids(const std::string& launch_output) {
  std::smatch m;
  REQUIRE(std::regex_search(launch_output, m, std::regex("pids (\\d+), (\\d+)")));
  return {static_cast<pid_t>(std::stoi(m[1])), static_cast<pid_t>(std::stoi(m[2]))};
}

// Starts rank 0 and rank 1 of a job of 2 with `args` (their logs: DIR_rank0.log, DIR_rank1.log)
// and waits until rank 0 has logged step 10.
std::pair<pid_t, pid_t> start_two_ranks(const fs::path& dir, const std::string& args) {
  const int port = kd::distributed::free_port();
  const pid_t rank0 = spawn_kd(args, dir.string() + "_rank0.log", rank_env(0, port));
  const pid_t rank1 = spawn_kd(args, dir.string() + "_rank1.log", rank_env(1, port));
  REQUIRE(wait_for([&] { return read_text(dir.string() + "_rank0.log").find("step 10 ") != std::string::npos; }, 120));
  return {rank0, rank1};
}

// Waits (boundedly, so that a hang fails the test) for `pid` to exit; false if it did not.
bool exits(pid_t pid, int& status) {
  const bool exited = wait_for([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 120);
  if (!exited) kill(pid, SIGKILL), waitpid(pid, &status, 0);
  return exited;
}

// Uninterrupted single-process runs, shared by the tests that compare against them: the whole
// batch at once, and the batch in the two halves the ranks get (kSameSplit).
const fs::path& single_process_run(const std::string& extra = "") {
  static std::map<std::string, fs::path> runs;
  auto [it, added] = runs.try_emplace(extra);
  if (added) {
    it->second = fresh_dir();
    const Result r = run_kd(flagship_100(it->second, extra));
    INFO(r.output);
    REQUIRE(r.code == 0);
  }
  return it->second;
}

const fs::path& same_split_run() { return single_process_run(kSameSplit); }

}  // namespace

TEST_CASE(
    "2 ranks splitting the global batch end bit for bit where 1 process on the same halves does, "
    "and log global metrics") {
  const fs::path& halves = same_split_run();
  const fs::path& whole = single_process_run();
  const fs::path two = fresh_dir();
  const Result r = run_kd("launch --nproc=2 -- " + flagship_100(two));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("[rank 0] ") && Catch::Contains("data parallel: 2 ranks (gloo backend") &&
                           Catch::Contains("global batch 128 = 64 per rank"));
  CHECK(same_params(two, halves, 100));

  // Logged once, by rank 0, with the numbers of the whole global batch and test set: those of
  // the same halves up to the order of the sums, and close to those of the whole batch
  // (whose parameters drifted apart by rounding; see kSameSplit).
  const auto a = kd::writers::read_jsonl((halves / "metrics.jsonl").string());
  const auto w = kd::writers::read_jsonl((whole / "metrics.jsonl").string());
  const auto b = kd::writers::read_jsonl((two / "metrics.jsonl").string());
  for (int64_t step : {50, 100}) {
    INFO("train step " << step);
    CHECK(value_of(record(b, "train", step), "losses/xent") ==
          Approx(value_of(record(a, "train", step), "losses/xent")).epsilon(1e-6));
    CHECK(value_of(record(b, "train", step), "metrics/accuracy") ==
          value_of(record(a, "train", step), "metrics/accuracy"));  // counts of correct examples: exact
    CHECK(value_of(record(b, "train", step), "losses/xent") ==
          Approx(value_of(record(w, "train", step), "losses/xent")).epsilon(0.05));
    CHECK(value_of(record(b, "train", step), "metrics/accuracy") ==
          Approx(value_of(record(w, "train", step), "metrics/accuracy")).margin(0.03));
  }
  const double accuracy = value_of(record(b, "test", 100), "metrics/accuracy");
  CHECK(accuracy == value_of(record(a, "test", 100), "metrics/accuracy"));
  CHECK(accuracy == Approx(value_of(record(w, "test", 100), "metrics/accuracy")).margin(0.03));
  const double correct = accuracy * 2000;  // counted over all 2000 test examples, not one rank's 1000
  CHECK(correct == Approx(std::round(correct)).margin(1e-6));
  CHECK(value_of(record(b, "test", 100), "losses/xent") ==
        Approx(value_of(record(a, "test", 100), "losses/xent")).epsilon(1e-6));

  // Rank 1 wrote nothing: every line of the log is there once.
  const std::string log = read_text(two / "log.txt");
  CHECK(std::count(log.begin(), log.end(), '\n') > 10);
  for (const char* line : {"step 50  losses", "step 100  losses", "eval test at step 100 ", "done: step 100 of"}) {
    const std::regex pattern(std::string("^[0-9-]+ [0-9:]+ \\[info\\] ") + line);
    std::size_t n = 0;
    std::istringstream lines(log);
    for (std::string l; std::getline(lines, l);) n += std::regex_search(l, pattern) ? 1 : 0;
    INFO(line);
    CHECK(n == 1);
  }
}

TEST_CASE("a 2-rank job resumes on 1 process with accumulate_steps: 2 and ends bit for bit where 1 process does") {
  const fs::path& halves = same_split_run();
  const fs::path dir = fresh_dir();
  const Result first = run_kd("launch --nproc=2 -- " + flagship_100(dir, "--cfg.stop_after_steps=50"));
  INFO(first.output);
  REQUIRE(first.code == 0);
  // The same global batch in the same halves, one after the other: a change the check of the
  // saved experiment allows, as the number of ranks.
  const Result second = run_kd(flagship_100(dir, kSameSplit));
  INFO(second.output);
  REQUIRE(second.code == 0);
  CHECK_THAT(second.output, Catch::Contains("resuming from step 50"));
  CHECK(same_params(dir, halves, 100));
}

TEST_CASE("BatchNorm statistics are rank 0's everywhere: kd eval of a 2-rank checkpoint reproduces its logged eval") {
  const fs::path dir = fresh_dir();
  const Result r = run_kd("launch --nproc=2 -- train --cfg=" + std::string(KD_SOURCE_DIR) +
                          "/configs/fashion_mnist_cnn.yaml --cfg.workdir=" + dir.string() +
                          " --cfg.num_train_steps=30 --cfg.log_metrics_every=10 --cfg.num_threads=1"
                          " --cfg.evals.test.ds.num_examples=1000 '--cfg.evals.test.run={type: Final}'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const double logged =
      value_of(record(kd::writers::read_jsonl((dir / "metrics.jsonl").string()), "test", 30), "metrics/accuracy");
  const Result eval = run_kd("eval --workdir=" + dir.string());  // one process, rank 0's checkpoint
  INFO(eval.output);
  REQUIRE(eval.code == 0);
  const auto records = kd::writers::read_jsonl((dir / "metrics.jsonl").string());
  REQUIRE(records.back().collection == "test");
  CHECK(value_of(records.back(), "metrics/accuracy") == Approx(logged).margin(1e-9));
}

TEST_CASE("a 2-rank run stopped part way resumes with 2 ranks and ends bit for bit where 1 process does") {
  const fs::path& halves = same_split_run();
  const fs::path two = fresh_dir();
  const Result first = run_kd("launch --nproc=2 -- " + flagship_100(two, "--cfg.stop_after_steps=50"));
  INFO(first.output);
  REQUIRE(first.code == 0);
  REQUIRE(fs::exists(two / "checkpoints" / "ckpt_50"));
  const Result second = run_kd("launch --nproc=2 -- " + flagship_100(two));
  INFO(second.output);
  REQUIRE(second.code == 0);
  CHECK_THAT(second.output, Catch::Contains("resuming from step 50"));
  CHECK(same_params(two, halves, 100));
  const auto b = kd::writers::read_jsonl((two / "metrics.jsonl").string());
  const auto a = kd::writers::read_jsonl((halves / "metrics.jsonl").string());
  // The interval 50..100 was logged after the resumption, from both runs' states.
  CHECK(value_of(record(b, "train", 100), "metrics/accuracy") == value_of(record(a, "train", 100), "metrics/accuracy"));
  CHECK(value_of(record(b, "train", 100), "losses/xent") ==
        Approx(value_of(record(a, "train", 100), "losses/xent")).epsilon(1e-6));
}

TEST_CASE("SIGTERM to one rank checkpoints once, stops every rank, and the job resumes") {
  const fs::path& halves = same_split_run();
  const fs::path two = fresh_dir();
  const auto [rank0, rank1] = start_two_ranks(two, flagship_100(two, "--cfg.log_metrics_every=10"));
  kill(rank1, SIGTERM);  // rank 1 only
  const int code0 = wait_exit_code(rank0), code1 = wait_exit_code(rank1);
  const std::string log0 = read_text(two.string() + "_rank0.log"), log1 = read_text(two.string() + "_rank1.log");
  INFO(log0 << "\n--- rank 1:\n" << log1);
  CHECK(code0 == 0);
  CHECK(code1 == 0);
  CHECK_THAT(log0, Catch::Contains("another rank was asked to stop; checkpoint saved"));
  std::smatch m;
  REQUIRE(std::regex_search(log0, m, std::regex("stopped at step (\\d+)")));
  const int64_t stopped = std::stoll(m[1]);
  CHECK(stopped < 100);
  CHECK(checkpoint_names(two) ==
        std::vector<std::string>{"ckpt_" + std::to_string(stopped)});  // one checkpoint, by rank 0

  const Result resumed = run_kd("launch --nproc=2 -- " + flagship_100(two));
  INFO(resumed.output);
  REQUIRE(resumed.code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resuming from step " + std::to_string(stopped)));
  CHECK(same_params(two, halves, 100));
}

TEST_CASE("a rank killed mid-training makes the other fail with a clear error, not hang") {
  const fs::path two = fresh_dir();
  // A long run: the kill comes well before its end.
  const auto [rank0, rank1] =
      start_two_ranks(two, flagship_100(two,
                                        "--cfg.num_train_steps=100000 "
                                        "--cfg.log_metrics_every=10 --cfg.distributed.timeout_s=60"));
  kill(rank1, SIGKILL);
  wait_exit_code(rank1);
  // The survivor notices the closed connection at its next collective (the 60 s timeout is
  // for peers that hang instead).
  int status = 0;
  const bool exited = exits(rank0, status);
  const std::string log0 = read_text(two.string() + "_rank0.log");
  INFO(log0);
  REQUIRE(exited);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK_THAT(log0, Catch::Contains("kd: error: rank 0 of 2: the all-reduce of the gradients failed") &&
                       Catch::Contains("Another rank died"));
}

TEST_CASE("a hung rank makes the other fail after distributed.timeout_s") {
  const fs::path two = fresh_dir();
  const auto [rank0, rank1] =
      start_two_ranks(two, flagship_100(two,
                                        "--cfg.num_train_steps=100000 "
                                        "--cfg.log_metrics_every=10 --cfg.distributed.timeout_s=3"));
  kill(rank1, SIGSTOP);
  int status = 0;
  const bool exited = exits(rank0, status);
  kill(rank1, SIGKILL);
  wait_exit_code(rank1);
  const std::string log0 = read_text(two.string() + "_rank0.log");
  INFO(log0);
  REQUIRE(exited);
  CHECK(WEXITSTATUS(status) == 2);
  CHECK_THAT(log0, Catch::Contains("did not answer within distributed.timeout_s (3 s)"));
}

TEST_CASE("kd launch stops every rank when one fails and returns its exit code") {
  const fs::path two = fresh_dir();
  const fs::path log = two.string() + "_launch.log";
  const pid_t launcher = spawn_kd(
      "launch --nproc=2 --grace=20 -- " + flagship_100(two, "--cfg.num_train_steps=100000 --cfg.log_metrics_every=10"),
      log);
  REQUIRE(wait_for(
      [&] {
        return read_text(log).find("[rank 0] ") != std::string::npos &&
               read_text(log).find("step 10 ") != std::string::npos;
      },
      120));
  kill(rank_pids(read_text(log))[1], SIGKILL);
  const int code = wait_exit_code(launcher);
  const std::string out = read_text(log);
  INFO(out);
  CHECK(code == 128 + SIGKILL);
  CHECK_THAT(out, Catch::Contains("kd launch: rank 1 was killed by signal 9; stopping the other ranks"));
  CHECK_THAT(out, Catch::Contains("[rank 0] kd: error: rank 0 of 2:"));
}

TEST_CASE("a torchrun environment that is incomplete or inconsistent is refused with the variable to fix") {
  const fs::path dir = fresh_dir();
  Result r = run_kd(flagship_100(dir), "RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("RANK=2 must be below WORLD_SIZE=2"));
  r = run_kd(flagship_100(dir), "RANK=0 WORLD_SIZE=2 MASTER_PORT=29500");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("not MASTER_ADDR"));
  r = run_kd(flagship_100(dir), "RANK=0 WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("batch_size 128 (the global batch) must split evenly over the 3 ranks"));
  CHECK(!fs::exists(dir));  // nothing was written
}

TEST_CASE("Ctrl-C on kd launch stops every rank after one checkpoint, exits 0, and the job resumes") {
  const fs::path two = fresh_dir();
  const fs::path log = two.string() + "_launch.log";
  const std::string args = flagship_100(two, "--cfg.num_train_steps=100000 --cfg.log_metrics_every=10");
  // As from an interactive shell: the launcher leads its process group, and Ctrl-C sends
  // SIGINT to that whole group.
  const pid_t launcher = spawn_kd("launch --nproc=2 -- " + args, log, "", /*own_group=*/true);
  REQUIRE(wait_for([&] { return read_text(log).find("step 10 ") != std::string::npos; }, 120));
  kill(-launcher, SIGINT);
  const int code = wait_exit_code(launcher);
  const std::string out = read_text(log);
  INFO(out);
  CHECK(code == 0);
  std::smatch m;
  REQUIRE(
      std::regex_search(out, m, std::regex("\\[rank 0\\] .*stopped by signal 15 at step (\\d+); checkpoint saved")));
  const int64_t stopped = std::stoll(m[1]);
  CHECK(checkpoint_names(two) == std::vector<std::string>{"ckpt_" + std::to_string(stopped)});

  const Result resumed =
      run_kd("launch --nproc=2 -- " + args + " --cfg.stop_after_steps=" + std::to_string(stopped + 5));
  INFO(resumed.output);
  CHECK(resumed.code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resuming from step " + std::to_string(stopped)) &&
                                 Catch::Contains("done: step " + std::to_string(stopped + 5)));
}

TEST_CASE("a NaN in one rank's slice makes every rank skip (or raise at) the same step") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  {
    std::ofstream csv(dir / "data.csv");
    csv << "a,b,label\n";
    for (int i = 0; i < 16; ++i)
      csv << (i == 10 ? std::string("nan") : std::to_string(i % 5 * 0.3)) << "," << (i % 3) << "," << (i % 2) << "\n";
  }
  // Batches of 4 in file order: the third (rows 8-11) gives rows 10-11, and the NaN, to rank 1.
  std::ofstream(dir / "exp.yaml")
      << "seed: 0\nnum_train_steps: 8\nlog_metrics_every: 4\nnum_threads: 1\n"
         "train_ds: {type: Csv, path: "
      << (dir / "data.csv").string()
      << ", label_column: label, batch_size: 4, shuffle: false, allow_non_finite: true}\n"
         "model: {type: MLP, input_size: 2, hidden_sizes: [8], output_size: 2, inputs: {x: batch.features}}\n"
         "train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels, logits: preds.logits, labels: batch.label}}\n"
         "optimizer: {type: sgd, learning_rate: 0.1}\n";
  const std::string exp = "--cfg=" + (dir / "exp.yaml").string();
  const Result one =
      run_kd("train " + exp + " --cfg.workdir=" + (dir / "one").string() + " --cfg.nan_policy=skip_step " + kSameSplit);
  INFO(one.output);
  REQUIRE(one.code == 0);
  const Result two = run_kd("launch --nproc=2 -- train " + exp + " --cfg.workdir=" + (dir / "two").string() +
                            " --cfg.nan_policy=skip_step");
  INFO(two.output);
  REQUIRE(two.code == 0);
  // Rank 0's own slice was finite; it skipped with rank 1.
  CHECK_THAT(two.output, Catch::Contains("[rank 0] ") && Catch::Contains("step 2: non-finite loss, update skipped"));
  CHECK(same_params(dir / "two", dir / "one", 8));

  const Result raised = run_kd("launch --nproc=2 -- train " + exp + " --cfg.workdir=" + (dir / "raise").string());
  INFO(raised.output);
  CHECK(raised.code == 2);
  CHECK_THAT(raised.output,
             Catch::Contains("[rank 0] kd: error: non-finite loss at step 2: the loss of another process") &&
                 Catch::Contains("[rank 1] kd: error: non-finite loss at step 2: losses/xent = nan"));
}

TEST_CASE("SIGTERM to every process of a job at once (as a scheduler does) still saves once and exits 0") {
  const fs::path two = fresh_dir();
  const fs::path log = two.string() + "_launch.log";
  const pid_t launcher = spawn_kd("launch --nproc=2 -- " + flagship_100(two,
                                                                        "--cfg.num_train_steps=100000 "
                                                                        "--cfg.log_metrics_every=10"),
                                  log);
  REQUIRE(wait_for([&] { return read_text(log).find("step 10 ") != std::string::npos; }, 120));
  // The ranks get it twice: from the "scheduler" and from kd launch passing it on.
  for (const pid_t rank : rank_pids(read_text(log))) kill(rank, SIGTERM);
  kill(launcher, SIGTERM);
  const int code = wait_exit_code(launcher);
  const std::string out = read_text(log);
  INFO(out);
  CHECK(code == 0);
  CHECK_THAT(out, Catch::Contains("checkpoint saved"));
  CHECK(checkpoint_names(two).size() == 1);
}

TEST_CASE("a 2-rank CNN with dropout and augmentation resumes bit-exactly: each rank's random state is restored") {
  const fs::path whole = fresh_dir(), split = fresh_dir();
  const std::string cnn = "train --cfg=" + std::string(KD_SOURCE_DIR) +
                          "/configs/fashion_mnist_cnn.yaml --cfg.num_train_steps=20 --cfg.log_metrics_every=5"
                          " --cfg.num_threads=1 --cfg.train_ds.num_examples=2000 --cfg.evals={}";
  Result r = run_kd("launch --nproc=2 -- " + cnn + " --cfg.workdir=" + whole.string());
  INFO(r.output);
  REQUIRE(r.code == 0);
  r = run_kd("launch --nproc=2 -- " + cnn + " --cfg.workdir=" + split.string() + " --cfg.stop_after_steps=10");
  REQUIRE(r.code == 0);
  r = run_kd("launch --nproc=2 -- " + cnn + " --cfg.workdir=" + split.string());
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("resuming from step 10"));
  CHECK(same_params(whole, split, 20));
}
