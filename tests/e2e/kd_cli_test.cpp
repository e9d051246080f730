// End-to-end tests: the real `kd` binary on real (small) data.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "trainer/writers/writer.h"

namespace fs = std::filesystem;

namespace {

struct Result {
  int code;
  std::string output;  // stdout and stderr
};

Result run_kd(const std::string& args) {
  const std::string command = std::string(KD_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  std::array<char, 4096> buffer;
  while (std::fgets(buffer.data(), buffer.size(), pipe)) output += buffer.data();
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

fs::path fresh_dir() {
  std::random_device rd;
  const fs::path dir = fs::temp_directory_path() / ("kd_e2e_" + std::to_string(rd()));
  fs::remove_all(dir);
  return dir;
}

const std::string kMlp = std::string(KD_SOURCE_DIR) + "/configs/fashion_mnist_mlp.yaml";

// The flagship MLP shortened: 5000 training examples, 300 steps, 2000 test examples.
std::string small_mlp(const fs::path& workdir) {
  return "--cfg=" + kMlp + " --cfg.workdir=" + workdir.string() +
         " --cfg.train_ds.num_examples=5000 --cfg.num_train_steps=300 --cfg.log_metrics_every=100"
         " --cfg.evals.test.ds.num_examples=2000 '--cfg.evals.test.run={once_at_end: true}'";
}

double value_of(const kd::writers::JsonlRecord& r, const std::string& name) {
  for (const auto& [k, v] : r.values) {
    if (k == name) return v;
  }
  FAIL("no " << name << " in the record of step " << r.step);
  return 0;
}

}  // namespace

TEST_CASE("kd train learns Fashion-MNIST far above chance and writes its workdir") {
  const fs::path workdir = fresh_dir();
  const Result r = run_kd("train " + small_mlp(workdir));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(fs::exists(workdir / "config.yaml"));
  CHECK(fs::exists(workdir / "log.txt"));
  const auto records = kd::writers::read_jsonl((workdir / "metrics.jsonl").string());
  std::vector<int64_t> train_steps;
  const kd::writers::JsonlRecord* test = nullptr;
  for (const auto& rec : records) {
    if (rec.collection == "train") train_steps.push_back(rec.step);
    if (rec.collection == "test") test = &rec;
  }
  CHECK(train_steps == std::vector<int64_t>{100, 200, 300});
  REQUIRE(test != nullptr);
  CHECK(test->step == 300);
  CHECK(value_of(*test, "metrics/accuracy") > 0.70);  // chance is 0.10
  CHECK(value_of(records.front(), "perf_stats/steps_per_sec") > 0);
  CHECK(value_of(records.front(), "schedules/learning_rate") == Approx(1e-3));
  const double first_loss = value_of(records.front(), "losses/xent");
  CHECK(value_of(records.front(), "losses/total") == Approx(first_loss));

  // The saved experiment runs again as is (into a new workdir).
  const fs::path again = fresh_dir();
  const Result r2 = run_kd("train --cfg=" + (workdir / "config.yaml").string() + " --cfg.workdir=" + again.string() +
                           " --cfg.num_train_steps=10 --cfg.evals={}");
  INFO(r2.output);
  CHECK(r2.code == 0);
  CHECK(fs::exists(again / "metrics.jsonl"));

  // The first workdir is never written over.
  const Result r3 = run_kd("train " + small_mlp(workdir));
  CHECK(r3.code == 2);
  CHECK_THAT(r3.output, Catch::Contains("already holds a run"));
  fs::remove_all(workdir);
  fs::remove_all(again);
}

TEST_CASE("a misspelt key fails before training with file, line and the nearest key") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  const fs::path cfg = dir / "exp.yaml";
  std::ofstream(cfg) << "base: " << kMlp << "\nworkdir: " << (dir / "wd").string()
                     << "\noptimizer:\n  type: adam\n  learnig_rate: 0.1\n";
  const Result r = run_kd("train --cfg=" + cfg.string());
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains(cfg.string() + ":5:3: unknown key \"learnig_rate\"") &&
                           Catch::Contains("Did you mean \"learning_rate\"?"));
  CHECK_FALSE(fs::exists(dir / "wd"));
  fs::remove_all(dir);
}

TEST_CASE("a wrong type and an unknown component type are reported with the fix") {
  const fs::path wd = fresh_dir();
  Result r = run_kd("train --cfg=" + kMlp + " --cfg.workdir=" + wd.string() + " --cfg.num_train_steps=many");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("--cfg.num_train_steps: \"num_train_steps\" must be an integer, but it is \"many\""));
  r = run_kd("train --cfg=" + kMlp + " --cfg.workdir=" + wd.string() + " --cfg.train_metrics.accuracy.type=Acuracy");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("unknown metric type \"Acuracy\". Did you mean Accuracy"));
  CHECK_FALSE(fs::exists(wd));
}

TEST_CASE("a misspelt path key fails at the first step with the context's nearest key") {
  const fs::path wd = fresh_dir();
  const Result r = run_kd("train " + small_mlp(wd) + " --cfg.train_losses.xent.labels=batch.lable");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("no key \"batch.lable\" in context") &&
                           Catch::Contains("Did you mean \"batch.label\"?"));
  CHECK_THAT(r.output, !Catch::Contains("frame #"));  // one message, no stack trace
  CHECK_FALSE(fs::exists(wd));
}

TEST_CASE("kd inspect prints the model and every context path") {
  const Result r = run_kd("inspect " + small_mlp(fresh_dir()));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("params.layers.0.weight") && Catch::Contains("float32[512, 784]"));
  CHECK_THAT(r.output, Catch::Contains("total: 535818 parameters"));
  CHECK_THAT(r.output, Catch::Contains("preds.logits  float32[128, 10]"));
  CHECK_THAT(r.output, Catch::Contains("metric_states.accuracy.total"));
}

TEST_CASE("kd configs lists the registered types and one type's options") {
  Result r = run_kd("configs");
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("SoftmaxCrossEntropyWithIntLabels") && Catch::Contains("RandomCrop") &&
                           Catch::Contains("WarmupCosineDecay"));
  r = run_kd("configs MLP");
  CHECK_THAT(r.output, Catch::Contains("input_size") && !Catch::Contains("Accuracy"));
}
