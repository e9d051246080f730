// End-to-end tests of kd under faults and hostile input: kills before the first checkpoint,
// failing evals, signals in pairs, and experiments that must be refused with a clear error.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <xxhash.h>

#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/e2e/helpers.h"

using namespace kd_e2e;

namespace {

// 300 steps without a periodic checkpoint (save_interval_steps 1000): only the end saves one.
std::string no_early_checkpoint(const fs::path& workdir) {
  return "train " + small_mlp(workdir) + " --cfg.num_threads=1 --cfg.evals={}";
}

// `steps` steps with a checkpoint every 100.
std::string checkpoint_every_100(const fs::path& workdir, int steps) {
  return "train " + small_mlp(workdir) +
         " --cfg.num_threads=1 --cfg.evals={} --cfg.checkpointer.save_interval_steps=100"
         " --cfg.num_train_steps=" +
         std::to_string(steps);
}

}  // namespace

TEST_CASE(
    "a run killed before its first checkpoint starts over with the same command and ends as an uninterrupted one") {
  const fs::path straight = fresh_dir(), killed = fresh_dir();
  const Result r = run_kd(no_early_checkpoint(straight));
  INFO(r.output);
  REQUIRE(r.code == 0);

  const fs::path log = killed.string() + ".log";
  const pid_t pid = spawn_kd(no_early_checkpoint(killed), log);
  REQUIRE(wait_for([&] { return read_text(log).find("step 100 ") != std::string::npos; }, 120));
  kill(pid, SIGKILL);
  wait_exit_code(pid);
  REQUIRE((!fs::exists(killed / "checkpoints") || checkpoint_names(killed).empty()));

  // Another experiment on that workdir is refused, and nothing is changed.
  const std::string before = read_text(killed / "metrics.jsonl");
  const Result other = run_kd(no_early_checkpoint(killed) + " --cfg.seed=7");
  CHECK(other.code == 2);
  CHECK_THAT(other.output, Catch::Contains("seed: 0 -> 7"));
  CHECK(read_text(killed / "metrics.jsonl") == before);

  const Result again = run_kd(no_early_checkpoint(killed));
  INFO(again.output);
  REQUIRE(again.code == 0);
  CHECK_THAT(again.output, Catch::Contains("stopped before its first checkpoint; starting it over"));
  CHECK(logged_steps(killed, "train") == std::vector<int64_t>{100, 200, 300});  // each once
  CHECK(same_params(straight, killed, 300));
  // log.txt keeps the killed run's lines (written at once), then the new run's.
  const std::string text = read_text(killed / "log.txt");
  CHECK(std::regex_search(text, std::regex("\\[info\\] step 100 [^\\n]*\\n(.*\\n)*.*starting it over")));
  fs::remove_all(straight);
  fs::remove_all(killed);
  fs::remove(log);
}

TEST_CASE("an eval that fails where a checkpoint is due leaves that checkpoint and names the eval") {
  const fs::path dir = fresh_dir();
  const Result r = run_kd("train " + small_mlp(dir) +
                          " --cfg.num_threads=1 --cfg.checkpointer.save_interval_steps=50"
                          " '--cfg.evals.test.run={type: EveryNSteps, n: 50, skip_first: true}'"
                          " '--cfg.evals.test.metrics={accuracy: {type: Accuracy, labels: batch.lable}}'");
  INFO(r.output);
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("evaluating at step 50 failed for eval 'evals/test'") &&
                           Catch::Contains("Did you mean \"batch.label\""));
  CHECK(checkpoint_names(dir) == std::vector<std::string>{"ckpt_50"});
  fs::remove_all(dir);
}

namespace {

// Whether SIGINT is pending for process `pid` (its SigPnd or ShdPnd mask in /proc/PID/status).
bool sigint_pending(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) {
      if ((std::stoull(line.substr(7), nullptr, 16) >> (SIGINT - 1)) & 1) return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("SIGINT twice within a second is one request: one checkpoint, exit 0") {
  const fs::path dir = fresh_dir();
  const fs::path log = dir.string() + ".log";
  const pid_t pid = spawn_kd("train " + small_mlp(dir) +
                                 " --cfg.num_threads=1 --cfg.num_train_steps=100000 "
                                 "--cfg.log_metrics_every=10 --cfg.evals={}",
                             log);
  REQUIRE(wait_for([&] { return read_text(log).find("step 10 ") != std::string::npos; }, 120));
  kill(pid, SIGINT);
  // The second once the first has been delivered (no SIGINT pending in /proc/PID/status, so the
  // two are not merged into one by the kernel), while the run still finishes its step and saves.
  REQUIRE(wait_for([&] { return !sigint_pending(pid); }, 10));
  int status = 0;
  REQUIRE(waitpid(pid, &status, WNOHANG) == 0);  // still running: the second signal reaches it
  REQUIRE(kill(pid, SIGINT) == 0);
  waitpid(pid, &status, 0);
  const std::string out = read_text(log);
  INFO(out);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(out, Catch::Contains("stopped by signal 2 at step"));
  CHECK(checkpoint_names(dir).size() == 1);
  fs::remove_all(dir);
  fs::remove(log);
}

TEST_CASE("experiments and command lines a user gets wrong are refused with the key and exit 2, writing nothing") {
  const fs::path dir = fresh_dir();
  const std::string base = "train --cfg=" + kMlp + " --cfg.workdir=" + dir.string() + " ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--cfg.evals=[test]", "--cfg.evals: \"evals\" must be a map"},
      {"--cfg.checkpointer=5", "\"checkpointer\" must be a map"},
      {"--cfg.evals.test.num_batches=-1", "\"evals.test.num_batches\" must be >= 0, got -1"},
      {"--cfg.optimizer.learning_rate=-1", "\"optimizer.learning_rate\" must be a finite number >= 0, got -1"},
      {"--cfg.optimizer.learning_rate=.nan", "\"optimizer.learning_rate\" must be a finite number, but it is \".nan\""},
      {"--cfg.optimizer.weight_decay=-1", "\"optimizer.weight_decay\" must be >= 0, got -1"},
      {"--cfg.optimizer.b2=1", "\"optimizer.b2\" must be below 1"},
      {"--cfg.model.hidden_sizes=[-5]", "element 0 is -5"},
      {"--cfg.model.hidden_sizes=[0]", "element 0 is 0"},
      {"--cfg.num_threads=100000", "num_threads must be auto or in [1, "},
      {"--cfg.train_ds.prefetch=1000000000", "\"train_ds.prefetch\" must be in [0, 64]"},
      {"--cfg.train_ds.prefetch=fast", "(prefetch is auto or a number of batches)"},
      {"--cfg.optimizer.learnig_rate=1", "--cfg.optimizer.learnig_rate: unknown key \"learnig_rate\""},
      {"'--cfg.seed=&a [*a]'", "nested deeper than 64 levels"},
      {"--cfg.distributed.timeout_s=.inf", "\"distributed.timeout_s\" must be a finite number, but it is \".inf\""},
      {"--cfg.seed=-1", "\"seed\" must be >= 0, got -1"},
      {"--cfg.stop_after_steps=-5", "\"stop_after_steps\" must be >= 0, got -5"},
      {"--cfg.train_ds.num_workers=0", "\"train_ds.num_workers\" must be in [1, 256], got 0"},
      {"--cfg.train_ds.on_error=ignore", "on_error must be raise or skip"},
  };
  for (const auto& [arg, message] : cases) {
    const Result r = run_kd(base + arg);
    INFO(arg << "\n" << r.output);
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains(message));
    CHECK_THAT(r.output, !Catch::Contains("Exception raised from") && !Catch::Contains("INTERNAL ASSERT"));
    CHECK(!fs::exists(dir));
  }
  Result r = run_kd("trian --cfg=" + kMlp);
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("unknown command \"trian\". Did you mean \"train\"?"));
  r = run_kd("train --cfg=" + std::string(KD_SOURCE_DIR) + "/configs");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("is a directory; give the experiment's YAML file"));
}

namespace {

std::string xxh3_hex(const std::string& data) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(XXH3_64bits(data.data(), data.size())));
  return buf;
}

// Writes `data` as `file` of checkpoint `dir` and re-signs its manifest: the checksums stay
// valid, as an attacker (or a buggy tool) would leave them.
void craft(const fs::path& dir, const std::string& file, const std::string& data) {
  std::ofstream(dir / file, std::ios::binary | std::ios::trunc) << data;
  auto manifest = nlohmann::json::parse(read_text(dir / "MANIFEST.json"));
  manifest["files"][file] = {{"size", data.size()}, {"xxh3_64", xxh3_hex(data)}};
  std::ofstream(dir / "MANIFEST.json", std::ios::trunc) << manifest.dump(1);
}

void copy_dir(const fs::path& from, const fs::path& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
}

}  // namespace

TEST_CASE(
    "crafted checkpoints with valid checksums are damaged: the one before them is used, and the run ends as an "
    "uninterrupted one") {
  const fs::path straight = fresh_dir(), pristine = fresh_dir(), dir = fresh_dir();
  const auto args = [](const fs::path& w, int steps) {
    return checkpoint_every_100(w, steps) + " --cfg.checkpointer.max_to_keep=5";
  };
  REQUIRE(run_kd(args(straight, 300)).code == 0);
  const Result first = run_kd(args(pristine, 200));
  INFO(first.output);
  REQUIRE(first.code == 0);
  const fs::path newest = dir / "checkpoints" / "ckpt_200";
  const std::string meta = read_text(pristine / "checkpoints" / "ckpt_200" / "meta.json");
  auto meta_with = [&](const std::function<void(nlohmann::ordered_json&)>& edit) {
    auto j = nlohmann::ordered_json::parse(meta);
    edit(j);
    return j.dump(1);
  };
  std::string deep = "null";
  for (int i = 0; i < 5000; ++i) deep = "{\"l\": [" + deep + "]}";

  const std::vector<std::pair<std::string, std::function<void()>>> crafts = {
      {"a manifest naming a file outside the checkpoint",
       [&] {
         auto m = nlohmann::json::parse(read_text(newest / "MANIFEST.json"));
         m["files"]["../../config.yaml"] = m["files"]["config.yaml"];
         std::ofstream(newest / "MANIFEST.json", std::ios::trunc) << m.dump();
       }},
      {"a manifest that lists nothing",
       [&] { std::ofstream(newest / "MANIFEST.json", std::ios::trunc) << "{\"step\": 200, \"files\": {}}"; }},
      {"a manifest whose step is not the directory's",
       [&] {
         auto m = nlohmann::json::parse(read_text(newest / "MANIFEST.json"));
         m["step"] = 7;
         std::ofstream(newest / "MANIFEST.json", std::ios::trunc) << m.dump();
       }},
      {"meta.json with another step", [&] { craft(newest, "meta.json", meta_with([](auto& j) { j["step"] = 999; })); }},
      {"meta.json nested 5000 deep",
       [&] {
         craft(newest, "meta.json", meta_with([&](auto& j) { j["aux"] = nlohmann::ordered_json::parse(deep); }));
       }},
      {"meta.json pointing a weight at a bias tensor",
       [&] { craft(newest, "meta.json", meta_with([](auto& j) { j["params"][0][1] = j["params"][1][1]; })); }},
      {"meta.json that is not an object", [&] { craft(newest, "meta.json", "[1, 2, 3]"); }},
      {"a data position past the data",
       [&] { craft(newest, "meta.json", meta_with([](auto& j) { j["data"]["index"] = 1000000; })); }},
      {"state.safetensors that is not one", [&] { craft(newest, "state.safetensors", std::string(4096, 'x')); }},
      {"state.safetensors whose first tensor points past the data",
       [&] {
         std::string bytes = read_text(newest / "state.safetensors");
         const std::string from = "\"data_offsets\":[0,";
         const auto at = bytes.find(from);
         REQUIRE(at != std::string::npos);
         bytes.replace(at, from.size(), "\"data_offsets\":[9,");  // same length: only the offsets are wrong
         craft(newest, "state.safetensors", bytes);
       }},
      {"state.safetensors as a link to a file elsewhere",
       [&] {
         fs::remove(newest / "state.safetensors");
         fs::create_symlink(pristine / "checkpoints" / "ckpt_200" / "state.safetensors", newest / "state.safetensors");
       }},
      {"an optimizer state whose moment has another shape",
       [&] {
         craft(newest, "meta.json", meta_with([](auto& j) {
                 // The first exp_avg found (the first weight's) points at the first bias's tensor.
                 std::function<bool(nlohmann::ordered_json&)> swap = [&](nlohmann::ordered_json& n) {
                   for (const char* kind : {"d", "l"}) {
                     if (!n.is_object() || !n.contains(kind)) continue;
                     for (auto& item : n[kind]) {
                       auto& child = std::string(kind) == "d" ? item[1] : item;
                       if (std::string(kind) == "d" && item[0] == "exp_avg") {
                         child["t"] = j["params"][1][1];
                         return true;
                       }
                       if (swap(child)) return true;
                     }
                   }
                   return false;
                 };
                 REQUIRE(swap(j["optimizer"]));
               }));
       }},
      {"a config.yaml that is an alias bomb", [&] { craft(newest, "config.yaml", "a: &a [*a]\n"); }},
  };
  for (const auto& [what, damage] : crafts) {
    INFO(what);
    copy_dir(pristine, dir);
    damage();
    fs::create_directories(dir / "checkpoints" / "ckpt_999");      // a stray empty directory
    std::ofstream(dir / "checkpoints" / "notes.txt") << "mine\n";  // and a user's file
    const Result r = run_kd(args(dir, 300));
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("ckpt_200 is damaged") && Catch::Contains("resuming from step 100"));
    CHECK(same_params(straight, dir, 300));
    CHECK(read_text(dir / "checkpoints" / "notes.txt") == "mine\n");
    // The damaged one is kept for inspection under a name that is not a checkpoint's, so that
    // pruning the new saves does not count it.
    CHECK(fs::is_directory(dir / "checkpoints" / "damaged.ckpt_200"));
  }
  // kd eval and kd export skip the damaged newest checkpoint too.
  copy_dir(pristine, dir);
  craft(newest, "meta.json", meta_with([](auto& j) { j["step"] = 999; }));
  const Result eval = run_kd("eval --workdir=" + dir.string() +
                             " '--cfg.evals={test: {ds: {type: FashionMnist, split: test, "
                             "num_examples: 500, batch_size: 250}}}'");
  INFO(eval.output);
  CHECK(eval.code == 0);
  CHECK_THAT(eval.output, Catch::Contains("ckpt_200 is damaged"));
  const Result exported = run_kd("export --workdir=" + dir.string() + " --out=" + (dir / "p.safetensors").string());
  INFO(exported.output);
  CHECK(exported.code == 0);
  CHECK_THAT(exported.output, Catch::Contains("of step 100"));
  for (const auto& d : {straight, pristine, dir}) fs::remove_all(d);
}

TEST_CASE("a finished run whose checkpoints were deleted keeps its logs: the same command is refused") {
  const fs::path dir = fresh_dir();
  REQUIRE(run_kd(no_early_checkpoint(dir)).code == 0);
  fs::remove_all(dir / "checkpoints");
  const std::string before = read_text(dir / "metrics.jsonl");
  const Result again = run_kd(no_early_checkpoint(dir));
  INFO(again.output);
  CHECK(again.code == 2);
  CHECK_THAT(again.output, Catch::Contains("holds a run logged up to step 300 without a checkpoint"));
  CHECK(read_text(dir / "metrics.jsonl") == before);
  fs::remove_all(dir);
}

TEST_CASE("a checkpoint copied under another name, or named with a trailing slash, still initialises a run") {
  const fs::path source = fresh_dir(), target = fresh_dir();
  REQUIRE(run_kd(no_early_checkpoint(source) + " --cfg.num_train_steps=20").code == 0);
  fs::copy(source / "checkpoints" / "ckpt_20", source / "pretrained", fs::copy_options::recursive);
  for (const std::string& from :
       {(source / "pretrained").string(), (source / "checkpoints" / "ckpt_20").string() + "/"}) {
    fs::remove_all(target);
    const Result r = run_kd(no_early_checkpoint(target) +
                            " --cfg.num_train_steps=1 '--cfg.init_transform={checkpoint: " + from + "}'");
    INFO(from << "\n" << r.output);
    CHECK(r.code == 0);
    CHECK_THAT(r.output, Catch::Contains("init_transform:"));
  }
  fs::remove_all(source);
  fs::remove_all(target);
}

TEST_CASE(
    "a full disk fails the save with a clear error, keeps every earlier checkpoint, and the run resumes once there is "
    "room") {
  const fs::path mount = fresh_dir();
  fs::create_directories(mount);
  // A 16 MiB file system: two checkpoints of the MLP (6.5 MB each) fit, a third does not.
  if (std::system(("mount -t tmpfs -o size=16m tmpfs " + mount.string() + " 2>/dev/null").c_str()) != 0) {
    WARN("not run: mounting a tmpfs needs root (CI runs it)");
    fs::remove_all(mount);
    return;
  }
  const fs::path straight = fresh_dir(), dir = mount / "w";
  const auto args = [](const fs::path& w) {
    return "train " + small_mlp(w) +
           " --cfg.num_threads=1 --cfg.evals={} --cfg.num_train_steps=400"
           " --cfg.checkpointer.save_interval_steps=100";
  };
  REQUIRE(run_kd(args(straight)).code == 0);
  const Result full = run_kd(args(dir));
  INFO(full.output);
  CHECK(full.code == 2);
  CHECK_THAT(full.output, Catch::Contains("saving the checkpoint of step 300 (earlier checkpoints are intact)") &&
                              Catch::Contains("No space left on device"));
  CHECK(checkpoint_names(dir).size() == 2);  // ckpt_100 and ckpt_200, and no temporary directory
  kd::checkpoints::Checkpointer checkpoints((dir / "checkpoints").string(), {});
  for (const auto& info : checkpoints.probe()) CHECK(info.valid());

  REQUIRE(std::system(("mount -o remount,size=64m " + mount.string()).c_str()) == 0);
  const Result again = run_kd(args(dir));
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK_THAT(again.output, Catch::Contains("resuming from step 200"));
  CHECK(same_params(straight, dir, 400));
  std::vector<int64_t> steps;
  for (const auto& r : kd::writers::read_jsonl((dir / "metrics.jsonl").string())) steps.push_back(r.step);
  CHECK(steps == std::vector<int64_t>{100, 200, 300, 400});
  CHECK(std::system(("umount " + mount.string()).c_str()) == 0);
  fs::remove_all(mount);
  fs::remove_all(straight);
}

TEST_CASE("a workdir of checkpoint format 1 (state.pt) is refused, named as such, and left as it was") {
  // Format 1 (kd before 2026-11-29) kept the tensors in a TorchScript archive; kd reads only
  // state.safetensors. The manifest alone tells: the archive is never opened.
  const fs::path dir = fresh_dir();
  const fs::path ckpt = dir / "checkpoints" / "ckpt_4";
  fs::create_directories(ckpt);
  const auto write = [](const fs::path& path, const std::string& text) { std::ofstream(path) << text; };
  write(ckpt / "state.pt", "PK not read");
  write(ckpt / "meta.json", "{}");
  write(ckpt / "config.yaml", "seed: 0\n");
  write(ckpt / "MANIFEST.json",
        R"({"step": 4, "files": {"state.pt": {"size": 11, "xxh3_64": "0"}, "meta.json": {"size": 2, "xxh3_64": "0"},)"
        R"( "config.yaml": {"size": 8, "xxh3_64": "0"}}})");
  const Result r = run_kd(no_early_checkpoint(dir) + " --cfg.num_train_steps=8");
  INFO(r.output);
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("checkpoint format 1 (state.pt)") && Catch::Contains("does not read") &&
                           Catch::Contains("nothing was changed"));
  CHECK(checkpoint_names(dir) == std::vector<std::string>{"ckpt_4"});  // nothing moved or changed
  CHECK(fs::file_size(ckpt / "state.pt") == 11);
  fs::remove_all(dir);
}

TEST_CASE("resuming with an optimizer of another type is refused by name, even with allow_config_change") {
  const fs::path dir = fresh_dir();
  REQUIRE(run_kd(no_early_checkpoint(dir) + " --cfg.num_train_steps=20").code == 0);
  const Result r = run_kd(no_early_checkpoint(dir) +
                          " --cfg.num_train_steps=40 --cfg.optimizer.type=sgd"
                          " --cfg.allow_config_change=true");
  INFO(r.output);
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("holds the state of an optimizer of type adam, but the experiment's is sgd") &&
                           Catch::Contains("init_transform"));
  CHECK(checkpoint_names(dir) == std::vector<std::string>{"ckpt_20"});
  fs::remove_all(dir);
}

TEST_CASE("a save killed at any point (a partial temporary directory, a re-save between its renames) is recovered") {
  const fs::path straight = fresh_dir(), dir = fresh_dir();
  const auto args = checkpoint_every_100;
  REQUIRE(run_kd(args(straight, 300)).code == 0);
  REQUIRE(run_kd(args(dir, 200)).code == 0);
  // Killed while writing the next checkpoint: its temporary directory holds part of a file.
  fs::create_directories(dir / "checkpoints" / "tmp.ckpt_300.4242");
  std::ofstream(dir / "checkpoints" / "tmp.ckpt_300.4242" / "state.safetensors") << "partial";
  // Killed between the two renames of a re-save of step 200: the old one moved aside, no new one.
  fs::rename(dir / "checkpoints" / "ckpt_200", dir / "checkpoints" / "ckpt_200.old.4242");
  const Result r = run_kd(args(dir, 300));
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("resuming from step 200"));
  CHECK(same_params(straight, dir, 300));
  CHECK(!fs::exists(dir / "checkpoints" / "tmp.ckpt_300.4242"));
  CHECK(!fs::exists(dir / "checkpoints" / "ckpt_200.old.4242"));
  fs::remove_all(straight);
  fs::remove_all(dir);
}

TEST_CASE("kd export beside a run that saves and prunes at every step always finds a checkpoint") {
  const fs::path dir = fresh_dir();
  const fs::path log = dir.string() + ".log";
  const pid_t pid = spawn_kd("train " + small_mlp(dir) +
                                 " --cfg.num_threads=1 --cfg.num_train_steps=100000 --cfg.log_metrics_every=1000"
                                 " --cfg.evals={} --cfg.checkpointer.save_interval_steps=1"
                                 " --cfg.checkpointer.max_to_keep=1",
                             log);
  REQUIRE(wait_for([&] { return fs::exists(dir / "checkpoints") && !checkpoint_names(dir).empty(); }, 120));
  // Bounded: at most 30 exports or 8 seconds, each while checkpoints come and go every few ms.
  std::vector<std::string> failures;
  int exports = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  for (; exports < 30 && std::chrono::steady_clock::now() < end; ++exports) {
    const fs::path out = dir.string() + "." + std::to_string(exports) + ".safetensors";
    const Result r = run_kd("export --workdir=" + dir.string() + " --out=" + out.string());
    if (r.code != 0) failures.push_back(r.output);
    fs::remove(out);
  }
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  std::string failed;
  for (const auto& f : failures) failed += f + "\n---\n";
  INFO(read_text(log) << "\nfailed exports:\n" << failed);
  CHECK(failures.empty());
  CHECK(exports >= 3);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(checkpoint_names(dir).size() == 1);  // none set aside as damaged
  fs::remove_all(dir);
  fs::remove(log);
}

TEST_CASE("a checkpoint of another model is said not to fit, never called damaged, and nothing older is tried") {
  const fs::path dir = fresh_dir();
  REQUIRE(
      run_kd("train " + small_mlp(dir) + " --cfg.num_train_steps=20 --cfg.checkpointer.save_interval_steps=10").code ==
      0);
  const std::vector<std::string> before = checkpoint_names(dir);
  REQUIRE(before.size() == 2);
  const Result resumed = run_kd("train " + small_mlp(dir) +
                                " --cfg.num_train_steps=40 --cfg.checkpointer.save_interval_steps=10"
                                " '--cfg.model.hidden_sizes=[64]' --cfg.allow_config_change=true");
  INFO(resumed.output);
  CHECK(resumed.code == 2);
  CHECK_THAT(resumed.output, Catch::Contains("the checkpoint of step 20 does not fit this experiment") &&
                                 Catch::Contains("init_transform") && !Catch::Contains("damaged") &&
                                 !Catch::Contains("step 10"));
  CHECK(checkpoint_names(dir) == before);
  const Result eval = run_kd("eval --workdir=" + dir.string() + " '--cfg.model.hidden_sizes=[64]'");
  INFO(eval.output);
  CHECK(eval.code == 2);
  CHECK_THAT(eval.output, Catch::Contains("does not fit this experiment") && !Catch::Contains("damaged"));
  fs::remove_all(dir);
}
