// kd sweep and kd config end to end: real runs of the flagship MLP, shortened.
#include <csignal>
#include <set>

#include <nlohmann/json.hpp>

#include "tests/e2e/helpers.h"

using namespace kd_e2e;

namespace {

// The flagship MLP, a few steps on 1000 examples, checkpoints every 20 steps, no eval.
std::string tiny_mlp(int64_t steps) {
  return "--cfg=" + kMlp + " --cfg.train_ds.num_examples=1000 --cfg.num_train_steps=" + std::to_string(steps) +
         " --cfg.log_metrics_every=20 --cfg.checkpointer.save_interval_steps=20 --cfg.evals.test.ds.num_examples=500"
         " '--cfg.evals.test.run={type: Final}'";
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

int64_t last_step(const fs::path& workdir) {
  const auto steps = logged_steps(workdir, "train");
  return steps.empty() ? -1 : steps.back();
}

}  // namespace

TEST_CASE("kd sweep runs a 2x2 product two at a time, and a rerun skips the finished points") {
  const fs::path dir = fresh_dir();
  const std::string command = "sweep " + tiny_mlp(40) + " --dir=" + dir.string() +
                              " --sweep.optimizer.learning_rate=[1e-3,3e-3] --sweep.seed=[0,1] --jobs=2";
  Result r = run_kd(command);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("4 points in " + dir.string() + ", 2 at a time, 1 intra-op thread each") &&
                           Catch::Contains("all 4 points finished"));
  // Named by the values as written.
  const std::vector<std::string> names = {"learning_rate=1e-3,seed=0", "learning_rate=1e-3,seed=1",
                                          "learning_rate=3e-3,seed=0", "learning_rate=3e-3,seed=1"};
  const nlohmann::json manifest = read_json(dir / "sweep.json");
  REQUIRE(manifest["points"].size() == 4);
  for (std::size_t i = 0; i < names.size(); ++i) {
    INFO(names[i]);
    CHECK(manifest["points"][i]["name"] == names[i]);
    CHECK(last_step(dir / names[i]) == 40);
    // Each point ran with its own values (its saved experiment says so).
    const std::string config = read_text(dir / names[i] / "config.yaml");
    CHECK_THAT(config, Catch::Contains(i < 2 ? "learning_rate: 1e-3" : "learning_rate: 3e-3") &&
                           Catch::Contains(i % 2 ? "seed: 1" : "seed: 0") && Catch::Contains("num_threads: 1"));
    CHECK(fs::exists(dir / "logs" / (names[i] + ".txt")));
  }
  CHECK(manifest["points"][2]["values"]["optimizer.learning_rate"] == "3e-3");
  // Seeds differ, learning rates differ: four different runs.
  CHECK_FALSE(same_params(dir / names[0], dir / names[1], 40));
  CHECK_FALSE(same_params(dir / names[0], dir / names[2], 40));

  const auto before = fs::last_write_time(dir / names[0] / "metrics.jsonl");
  r = run_kd(command);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains(names[3] + ": finished already") && Catch::Contains("all 4 points finished"));
  CHECK(fs::last_write_time(dir / names[0] / "metrics.jsonl") == before);

  // Another sweep into the same directory is refused, nothing changed: other points, or the
  // same points with other overrides.
  r = run_kd("sweep " + tiny_mlp(40) + " --dir=" + dir.string() + " --sweep.seed=[5]");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("holds another sweep"));
  r = run_kd(command + " --cfg.optimizer.b1=0.8");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("other --cfg overrides"));
  CHECK(read_json(dir / "sweep.json") == manifest);

#ifdef KD_WITH_REPORT
  // kd report shows the sweep: a series per point and the table of values and final metrics.
  const fs::path page = dir / "sweep.html";
  r = run_kd("report --workdir=" + dir.string() + " --out=" + page.string());
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("(4 runs)"));
  const std::string html = read_text(page);
  CHECK_THAT(html, Catch::Contains("<table class=\"sweep kd-sortable\">") &&
                       Catch::Contains("<th>optimizer.learning_rate</th><th>seed</th>") &&
                       Catch::Contains("<th>test/metrics/accuracy</th>"));
  for (const auto& name : names) CHECK_THAT(html, Catch::Contains("<tr><td>" + name + "</td>"));
  if (std::string(KD_CHROMIUM).empty()) {
    WARN("no Chromium: the sweep page was not rendered");
  } else {
    // Rendered: every chart drew, with a line per point; the table is there for the script to sort.
    const Result dom = run_command(std::string(KD_CHROMIUM) +
                                   " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
                                   "--user-data-dir=" +
                                   (dir / "profile").string() + " --virtual-time-budget=10000 --dump-dom file://" +
                                   page.string() + " 2>/dev/null");
    REQUIRE(dom.code == 0);
    CHECK_THAT(dom.output, Catch::Contains("data-charts-drawn=") && !Catch::Contains("data-charts-drawn=\"0\""));
    CHECK_THAT(dom.output, Catch::Contains(names[3] + " · train") && Catch::Contains("kd-sortable"));
  }
#endif
  fs::remove_all(dir);
}

TEST_CASE("a sweep stopped by a kill resumes its interrupted points when the command is rerun") {
  const fs::path dir = fresh_dir();
  const std::string command =
      "sweep " + tiny_mlp(3000) + " --dir=" + dir.string() + " --sweep.seed=[0,1] --jobs=2 --cfg.num_threads=1";
  const pid_t sweep = spawn_kd(command, dir.string() + ".log");
  const fs::path a = dir / "seed=0", b = dir / "seed=1";
  // Both points have saved a checkpoint: kill the sweep outright.
  const auto saved = [](const fs::path& w) { return fs::exists(w / "checkpoints") && !checkpoint_names(w).empty(); };
  REQUIRE(wait_for([&] { return saved(a) && saved(b); }, 120));
  kill(sweep, SIGKILL);
  wait_exit_code(sweep);
  // Its points get SIGTERM: each saves a checkpoint and stops.
  REQUIRE(wait_for(
      [&] {
        return read_text(dir / "logs" / "seed=0.txt").find("checkpoint saved") != std::string::npos &&
               read_text(dir / "logs" / "seed=1.txt").find("checkpoint saved") != std::string::npos;
      },
      60));
  const int64_t stopped_a = last_step(a);
  CHECK(stopped_a < 3000);
  const Result r = run_kd(command);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(last_step(a) == 3000);
  CHECK(last_step(b) == 3000);
  CHECK_THAT(read_text(dir / "logs" / "seed=0.txt"), Catch::Contains("resuming from step"));
  fs::remove_all(dir);
  fs::remove(dir.string() + ".log");
}

TEST_CASE("kd sweep --slurm writes an array job, one task per point, that runs the point") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  std::ofstream(dir / "points.yaml") << "- {optimizer.learning_rate: 1e-3}\n- {optimizer.learning_rate: 3e-3}\n";
  Result r = run_kd("sweep " + tiny_mlp(20) + " --dir=" + dir.string() +
                    " --sweep-file=" + (dir / "points.yaml").string() + " --sweep.seed=[0,1,2] --slurm");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const fs::path script = dir / "sweep.sbatch";
  CHECK_THAT(r.output, Catch::Contains("an array job of 6 tasks") && Catch::Contains("sbatch " + script.string()));
  CHECK(run_command("bash -n " + script.string(), true).code == 0);
  const std::string text = read_text(script);
  CHECK_THAT(text, Catch::Contains("#SBATCH --array=0-5\n") && Catch::Contains("#SBATCH --requeue"));
  std::size_t execs = 0;
  for (std::size_t at = text.find("    exec '"); at != std::string::npos; at = text.find("    exec '", at + 1)) ++execs;
  CHECK(execs == 6);
  CHECK_THAT(text, Catch::Contains("'--cfg.workdir=" + (dir / "learning_rate=3e-3,seed=2").string() + "'") &&
                       Catch::Contains("'--cfg.optimizer.learning_rate=3e-3'") && Catch::Contains("'--cfg.seed=2'"));
  CHECK_FALSE(fs::exists(dir / "learning_rate=1e-3,seed=0"));  // nothing ran
  // Task 4 as SLURM would run it: point 4 trains.
  r = run_command("SLURM_ARRAY_TASK_ID=4 bash " + script.string(), true);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(last_step(dir / "learning_rate=3e-3,seed=1") == 20);
  CHECK(run_command("bash " + script.string(), true).code != 0);  // outside an array job: refused
  fs::remove_all(dir);
}

TEST_CASE("kd sweep refuses what it cannot run: no list, the workdir swept, a run's workdir as its directory") {
  const fs::path dir = fresh_dir();
  Result r = run_kd("sweep " + tiny_mlp(20) + " --dir=" + dir.string() + " --sweep.seed=3");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("give a list of the values to sweep, e.g. --sweep.seed=[1e-3,3e-3]"));
  r = run_kd("sweep " + tiny_mlp(20) + " --dir=" + dir.string() + " --sweep.workdir=[a,b]");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("gives each point its own workdir"));
  r = run_kd("sweep " + tiny_mlp(20) + " --dir=" + dir.string() + " --sweep.optimizer.learnig_rate=[1,2]");
  CHECK(r.code != 0);
  r = run_kd("train " + tiny_mlp(20) + " --cfg.workdir=" + dir.string());
  REQUIRE(r.code == 0);
  r = run_kd("sweep " + tiny_mlp(20) + " --dir=" + dir.string() + " --sweep.seed=[0,1]");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("is the workdir of a run"));
  fs::remove_all(dir);
}

TEST_CASE("kd config prints every value the run would use, defaults included, with where each comes from") {
  const fs::path dir = fresh_dir();
  fs::create_directories(dir);
  const std::string cnn = std::string(KD_SOURCE_DIR) + "/configs/fashion_mnist_cnn.yaml";
  std::ofstream(dir / "x.yaml") << "base: " << cnn << "\nworkdir: " << (dir / "run").string()
                                << "\noptimizer:\n  learning_rate: {decay_steps: \"${num_train_steps}\"}\n";
  Result r = run_kd("config --cfg=" + (dir / "x.yaml").string() + " --cfg.num_train_steps=700");
  INFO(r.output);
  REQUIRE(r.code == 0);
  const auto line_of = [&](const std::string& start) {
    const auto at = r.output.find("\n" + start);
    return at == std::string::npos ? std::string() : r.output.substr(at + 1, r.output.find('\n', at + 1) - at - 1);
  };
  CHECK_THAT(line_of("num_train_steps: 700"), Catch::EndsWith("# --cfg.num_train_steps"));
  CHECK_THAT(line_of("train_ds.batch_size: 128"), Catch::EndsWith("fashion_mnist_mlp.yaml:11"));
  CHECK_THAT(line_of("model.type: CNN"), Catch::EndsWith("fashion_mnist_cnn.yaml:14"));
  CHECK_THAT(line_of("optimizer.learning_rate.decay_steps: 700"),
             Catch::EndsWith((dir / "x.yaml").string() + ":4 = ${num_train_steps}"));
  CHECK_THAT(line_of("train_ds.shuffle: true"), Catch::EndsWith("# default"));
  CHECK_THAT(line_of("checkpointer.save_interval_steps: 1000"), Catch::EndsWith("# default"));
  CHECK_FALSE(fs::exists(dir / "run"));  // nothing written

  r = run_kd("config --json --cfg=" + (dir / "x.yaml").string() + " --cfg.num_train_steps=700");
  REQUIRE(r.code == 0);
  const auto json = nlohmann::json::parse(r.output.substr(r.output.find('[')));
  std::map<std::string, nlohmann::json> by_key;
  for (const auto& item : json) by_key[item["key"]] = item;
  CHECK(by_key.at("num_train_steps")["value"] == 700);
  CHECK(by_key.at("num_train_steps")["source"] == "--cfg.num_train_steps");
  CHECK(by_key.at("train_ds.shuffle")["value"] == true);
  CHECK(by_key.at("train_ds.shuffle")["source"] == "default");
  CHECK(by_key.at("optimizer.learning_rate.peak_value")["value"] == 2e-3);
  CHECK(by_key.at("optimizer.learning_rate.decay_steps")["reference"] == "${num_train_steps}");
  CHECK(by_key.at("model.channels")["value"] == nlohmann::json::array({32, 64}));

  // A misspelt key is the error kd train would give.
  r = run_kd("config --cfg=" + (dir / "x.yaml").string() + " --cfg.optimizer.learnig_rate=1");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("Did you mean \"learning_rate\"?"));

  r = run_kd("configs");
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("top-level keys") && Catch::Contains("  num_train_steps  (") &&
                           Catch::Contains("eval run strategies") && Catch::Contains("StandaloneEveryCheckpoint"));
  fs::remove_all(dir);
}
