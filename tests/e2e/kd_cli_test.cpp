// End-to-end tests: the real `kd` binary on real (small) data.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "tests/e2e/helpers.h"
#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/export.h"
#include "trainer/io/png.h"
#include "trainer/runtime/blas.h"
#include "trainer/writers/event_file.h"
#include "trainer/writers/tensorboard.pb.h"
#include "trainer/writers/writer.h"

using namespace kd_e2e;

TEST_CASE("kd train learns Fashion-MNIST far above chance and writes its workdir") {
  const fs::path workdir = fresh_dir();
  const Result r = run_kd("train " + small_mlp(workdir));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(fs::exists(workdir / "config.yaml"));
  CHECK(fs::exists(workdir / "log.txt"));
  CHECK(fs::exists(workdir / "metrics_train.csv"));
  CHECK(fs::exists(workdir / "metrics_test.csv"));
  for (const char* collection : {"train", "test"}) {
    INFO(collection);
    CHECK(!fs::is_empty(workdir / collection));  // TensorBoard event files
  }
  CHECK_THAT(read_text(workdir / "log.txt"),
             Catch::Contains("params.layers.0.weight") && Catch::Contains("total: 535818 parameters"));
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

  // Training again on the finished workdir resumes it: nothing to do, nothing rewritten.
  const Result r3 = run_kd("train " + small_mlp(workdir));
  INFO(r3.output);
  CHECK(r3.code == 0);
  CHECK_THAT(r3.output, Catch::Contains("resuming from step 300"));
  CHECK(kd::writers::read_jsonl((workdir / "metrics.jsonl").string()).size() == records.size());
  // A longer run continues where it stopped, and metrics.jsonl goes on without gaps.
  const Result r4 = run_kd("train " + small_mlp(workdir) + " --cfg.num_train_steps=400");
  INFO(r4.output);
  CHECK(r4.code == 0);
  std::vector<int64_t> steps;
  for (const auto& rec : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    if (rec.collection == "train") steps.push_back(rec.step);
  }
  CHECK(steps == std::vector<int64_t>{100, 200, 300, 400});

  // perf_stats: Kauldron's names; the training time goes on over the resumption; a checkpoint
  // saved in an interval is timed apart from its steps.
  double hours = 0;
  for (const auto& rec : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    if (rec.collection != "train") continue;
    INFO("step " << rec.step);
    const double steps_per_sec = value_of(rec, "perf_stats/steps_per_sec");
    CHECK(value_of(rec, "perf_stats/data_points_per_sec_global") == Approx(128 * steps_per_sec));
    CHECK(value_of(rec, "perf_stats/data_points_per_sec_per_device") == Approx(128 * steps_per_sec));  // one process
    CHECK(value_of(rec, "perf_stats/total_training_time_hours") > hours);
    hours = value_of(rec, "perf_stats/total_training_time_hours");
    CHECK(value_of(rec, "perf_stats/peak_host_memory_mb") > 10);  // LibTorch alone is more
    CHECK(value_of(rec, "perf_stats/eval_time_sec") == 0);        // the only eval runs at the end
    // The checkpoint of step 300 is saved after step 300 is logged: the resumed run has none to time.
    if (rec.step == 400) CHECK(value_of(rec, "perf_stats/checkpoint_time_sec") == 0);
  }
  fs::remove_all(workdir);
  fs::remove_all(again);
}

TEST_CASE("precision: bf16 trains and evaluates under autocast and learns as float32 does") {
  const fs::path workdir = fresh_dir();
  const Result r = run_kd("train " + small_mlp(workdir) + " --cfg.precision=bf16");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("precision bf16"));
  double accuracy = 0;
  for (const auto& rec : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    if (rec.collection == "test") accuracy = value_of(rec, "metrics/accuracy");
  }
  CHECK(accuracy > 0.70);  // chance is 0.10; float32 gets about 0.8 here
  // The checkpoint's params are float32 (the master weights).
  const auto params =
      kd::checkpoints::read_checkpoint_tensors((workdir / "checkpoints" / "ckpt_300").string(), "params");
  REQUIRE(!params.empty());
  for (const auto& [name, t] : params) CHECK(t.scalar_type() == torch::kFloat);
  fs::remove_all(workdir);
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
  CHECK_THAT(r.output,
             Catch::Contains("--cfg.num_train_steps: \"num_train_steps\" must be an integer, but it is \"many\""));
  r = run_kd("train --cfg=" + kMlp + " --cfg.workdir=" + wd.string() + " --cfg.train_metrics.accuracy.type=Acuracy");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("unknown metric type \"Acuracy\". Did you mean Accuracy"));
  CHECK_FALSE(fs::exists(wd));
}

TEST_CASE("a misspelt path key fails at the first step with the context's nearest key") {
  const fs::path wd = fresh_dir();
  const Result r = run_kd("train " + small_mlp(wd) + " --cfg.train_losses.xent.labels=batch.lable");
  CHECK(r.code == 2);
  CHECK_THAT(r.output,
             Catch::Contains("no key \"batch.lable\" in context") && Catch::Contains("Did you mean \"batch.label\"?"));
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
  CHECK_THAT(r.output, Catch::Contains("blas: ") && Catch::Contains(" GFLOP/s"));
}

TEST_CASE("kd never replaces OPENBLAS_CORETYPE, and warns when it is below the CPU") {
  const auto blas = kd::runtime::blas_info();
  if (blas.kernel.empty()) {
    WARN("LibTorch does not run on OpenBLAS here: nothing to test");
    return;
  }
  const std::string best = kd::runtime::best_openblas_kernel(kd::runtime::cpu_features());
  if (kd::runtime::openblas_kernel_tier(best) <= 1) {
    WARN("this CPU has no kernels above Prescott's: nothing to test");
    return;
  }
  const std::string train = "train " + small_mlp(fresh_dir()) + " --cfg.num_train_steps=2 --cfg.evals={}";

  // (When kd starts again is blas_restart_kernel's, tested in tests/runtime/blas_test.cpp.)
  // A value the user set is kept, with a warning naming the fix.
  Result r = run_kd(train, "OPENBLAS_CORETYPE=Prescott");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("kernel Prescott") && !Catch::Contains("restarted itself"));
  CHECK_THAT(r.output, Catch::Contains("OPENBLAS_CORETYPE=Prescott is set; kd leaves it as it is") &&
                           Catch::Contains("start the program with OPENBLAS_CORETYPE=" + best));

  // Kernels as wide as the CPU's: no restart, no warning.
  r = run_kd(train, "OPENBLAS_CORETYPE=" + best);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("kernel " + best) && !Catch::Contains("restarted itself") &&
                           !Catch::Contains("start the program with"));
}

TEST_CASE("kd configs lists the registered types and one type's options") {
  Result r = run_kd("configs");
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("SoftmaxCrossEntropyWithIntLabels") && Catch::Contains("RandomCrop") &&
                           Catch::Contains("WarmupCosineDecay"));
  r = run_kd("configs MLP");
  CHECK_THAT(r.output, Catch::Contains("input_size") && !Catch::Contains("Accuracy"));
  // Into a pipe (more than a stdio buffer): whole, up to the last optimizer's line, although kd
  // ends without the libraries' static destructors (kd::cli::end_process).
  r = run_command(std::string(KD_BINARY) + " configs");
  REQUIRE(r.code == 0);
  CHECK(r.output.size() > 4096);
  CHECK_THAT(r.output, Catch::EndsWith("eps_root = 0, weight_decay = 0)\n"));
}

TEST_CASE("a run killed with SIGKILL and restarted ends with the params of an uninterrupted run") {
  const std::string common =
      " --cfg.num_threads=1 --cfg.num_train_steps=600 '--cfg.checkpointer={save_interval_steps: 40}' --cfg.evals={}";
  const fs::path straight = fresh_dir(), killed = fresh_dir();
  REQUIRE(run_kd("train " + small_mlp(straight) + common).code == 0);
  const fs::path log = fs::temp_directory_path() / "kd_e2e_killed.log";
  const pid_t pid = spawn_kd("train " + small_mlp(killed) + common, log);
  const bool checkpointed = wait_for([&] { return fs::exists(killed / "checkpoints" / "ckpt_120"); }, 60);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(checkpointed);
  CHECK(WIFSIGNALED(status));  // killed mid-run, not finished
  const Result resumed = run_kd("train " + small_mlp(killed) + common);
  INFO(resumed.output);
  CHECK(resumed.code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resuming from step"));
  CHECK(same_params(straight, killed, 600));
  std::vector<int64_t> steps;
  for (const auto& r : kd::writers::read_jsonl((killed / "metrics.jsonl").string())) steps.push_back(r.step);
  CHECK(steps == std::vector<int64_t>{100, 200, 300, 400, 500, 600});
  fs::remove_all(straight);
  fs::remove_all(killed);
}

TEST_CASE("SIGTERM finishes the step, writes a checkpoint and exits 0, and the run then resumes") {
  const std::string common = " --cfg.num_threads=1 --cfg.evals={}";
  const fs::path workdir = fresh_dir();
  const fs::path log = fs::temp_directory_path() / "kd_e2e_sigterm.log";
  const pid_t pid = spawn_kd("train " + small_mlp(workdir) + common + " --cfg.num_train_steps=100000", log);
  // Once step 100 is logged.
  REQUIRE(wait_for(
      [&] { return fs::exists(workdir / "metrics.jsonl") && fs::file_size(workdir / "metrics.jsonl") > 0; }, 60));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string output = read_text(log);
  INFO(output);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(output, Catch::Contains("stopped by signal 15 at step"));
  kd::checkpoints::Checkpointer ckpt((workdir / "checkpoints").string(), {});
  const auto latest = ckpt.latest_valid();
  REQUIRE(latest.has_value());
  CHECK(latest->step >= 100);
  const Result resumed =
      run_kd("train " + small_mlp(workdir) + common + " --cfg.num_train_steps=" + std::to_string(latest->step + 5));
  CHECK(resumed.code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resuming from step " + std::to_string(latest->step)));
  fs::remove_all(workdir);
}

TEST_CASE("kd eval reproduces the logged test accuracy and kd export writes safetensors") {
  const fs::path workdir = fresh_dir();
  REQUIRE(run_kd("train " + small_mlp(workdir)).code == 0);
  double logged = -1;
  for (const auto& r : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    if (r.collection == "test") logged = value_of(r, "metrics/accuracy");
  }
  const Result eval = run_kd("eval --workdir=" + workdir.string());
  INFO(eval.output);
  REQUIRE(eval.code == 0);
  const auto records = kd::writers::read_jsonl((workdir / "metrics.jsonl").string());
  CHECK(records.back().collection == "test");
  CHECK(records.back().step == 300);
  CHECK(value_of(records.back(), "metrics/accuracy") == logged);
  // Step 300 was evaluated by the run and twice by kd eval: its records are replaced, never repeated.
  REQUIRE(run_kd("eval --workdir=" + workdir.string()).code == 0);
  int test_300 = 0;
  for (const auto& r : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    test_300 += r.collection == "test" && r.step == 300;
  }
  CHECK(test_300 == 1);
  const std::string csv = read_text(workdir / "metrics_test.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 2);  // the header and step 300

  const fs::path out = workdir / "model.safetensors";
  const Result exported = run_kd("export --workdir=" + workdir.string() + " --out=" + out.string());
  INFO(exported.output);
  REQUIRE(exported.code == 0);
  const std::string bytes = read_text(out);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  CHECK_THAT(bytes.substr(8, n), Catch::Contains("\"params.layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[512,784]"));
  // Never written over.
  CHECK(run_kd("export --workdir=" + workdir.string() + " --out=" + out.string()).code == 2);
  fs::remove_all(workdir);
}

TEST_CASE("kd export --ema writes the EMA of the params under the params' names") {
  const fs::path workdir = fresh_dir();
  REQUIRE(run_kd("train " + small_mlp(workdir) + " --cfg.num_train_steps=20 --cfg.optimizer.ema_decay=0.9").code == 0);
  const fs::path out = workdir / "ema.safetensors", plain = workdir / "params.safetensors";
  const Result exported = run_kd("export --ema --workdir=" + workdir.string() + " --out=" + out.string());
  INFO(exported.output);
  REQUIRE(exported.code == 0);
  REQUIRE(run_kd("export --workdir=" + workdir.string() + " --out=" + plain.string()).code == 0);
  const auto ema = kd::checkpoints::tensors_from_safetensors(read_text(out), out.string());
  const auto params = kd::checkpoints::tensors_from_safetensors(read_text(plain), plain.string());
  const auto saved = kd::checkpoints::read_checkpoint_tensors((workdir / "checkpoints" / "ckpt_20").string(), "ema");
  REQUIRE(ema.size() == 6);
  REQUIRE(saved.size() == ema.size());
  for (std::size_t i = 0; i < ema.size(); ++i) {
    INFO(ema[i].first);
    CHECK(ema[i].first == "params." + saved[i].first);
    CHECK(ema[i].first == params[i].first);
    CHECK(ema[i].second.equal(saved[i].second));
    CHECK(!ema[i].second.equal(params[i].second));
  }
  fs::remove_all(workdir);
  // A run without ema_decay has none to export.
  REQUIRE(run_kd("train " + small_mlp(workdir) + " --cfg.num_train_steps=1").code == 0);
  const Result none = run_kd("export --ema --workdir=" + workdir.string() + " --out=" + out.string());
  CHECK(none.code != 0);
  CHECK_THAT(none.output, Catch::Contains("holds no EMA") && Catch::Contains("optimizer.ema_decay"));
  CHECK(!fs::exists(out));
  fs::remove_all(workdir);
}

TEST_CASE("kd train records scalars, the experiment and image summaries in TensorBoard") {
  const fs::path workdir = fresh_dir();
  const Result r = run_kd("train " + small_mlp(workdir) +
                          " --cfg.num_train_steps=100 '--cfg.train_summaries={images: {type: ShowImages, "
                          "images: batch.image, num_images: 3, in_vrange: [0, 255]}}'");
  INFO(r.output);
  REQUIRE(r.code == 0);
  std::vector<kd::tensorboard::Event> events;
  for (const auto& entry : fs::directory_iterator(workdir / "train")) {
    for (const auto& record : kd::writers::read_records(entry.path().string())) {
      events.emplace_back();
      REQUIRE(events.back().ParseFromString(record));
    }
  }
  REQUIRE(events.size() >= 4);
  CHECK(events[0].file_version() == "brain.Event:2");
  bool config = false, image = false, loss = false;
  for (const auto& e : events) {
    for (const auto& v : e.summary().value()) {
      if (v.tag() == "config")
        config = e.step() == 0 && v.tensor().string_val(0).find("num_train_steps: 100") != std::string::npos;
      if (v.tag() == "losses/xent") loss = e.step() == 100;
      if (v.tag() == "summaries/images") {
        const torch::Tensor grid = kd::io::decode_png(v.image().encoded_image_string());
        image = e.step() == 100 && grid.size(0) == 28 && grid.size(1) == 3 * 28 + 2;
      }
    }
  }
  CHECK(config);
  CHECK(loss);
  CHECK(image);
  fs::remove_all(workdir);
}
