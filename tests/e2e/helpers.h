// Helpers of the end-to-end tests: run the real `kd` binary and read what it wrote.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/temp_dir.h"
#include "trainer/checkpoints/checkpointer.h"
#include "trainer/writers/writer.h"

namespace kd_e2e {

namespace fs = std::filesystem;

struct Result {
  int code;
  std::string output;  // stdout and stderr
};

// Runs a shell command to completion: its exit code and its output (stdout, then stderr
// where `with_stderr`).
inline Result run_command(const std::string& command, bool with_stderr = false) {
  FILE* pipe = popen((command + (with_stderr ? " 2>&1" : "")).c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  std::array<char, 4096> buffer;
  while (std::fgets(buffer.data(), buffer.size(), pipe)) output += buffer.data();
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// Runs `kd ARGS` to completion; `env` ("RANK=1 WORLD_SIZE=2 ...") is added to its environment.
inline Result run_kd(const std::string& args, const std::string& env = "") {
  return run_command((env.empty() ? "" : "env " + env + " ") + KD_BINARY + " " + args, /*with_stderr=*/true);
}

inline fs::path fresh_dir() { return kd::testing::fresh_dir("kd_e2e_"); }

inline const std::string kMlp = std::string(KD_SOURCE_DIR) + "/configs/fashion_mnist_mlp.yaml";

// The flagship MLP shortened: 5000 training examples, 300 steps, 2000 test examples.
inline std::string small_mlp(const fs::path& workdir) {
  return "--cfg=" + kMlp + " --cfg.workdir=" + workdir.string() +
         " --cfg.train_ds.num_examples=5000 --cfg.num_train_steps=300 --cfg.log_metrics_every=100"
         " --cfg.evals.test.ds.num_examples=2000 '--cfg.evals.test.run={type: Final}'";
}

// Starts `kd ARGS` in the background, its output going to `log`; `env` ("RANK=1 WORLD_SIZE=2 ...")
// is added to its environment.
// With `own_group` it leads a process group of its own, as a command started from a shell.
inline pid_t spawn_kd(const std::string& args, const fs::path& log, const std::string& env = "",
                      bool own_group = false) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (own_group) setpgid(0, 0);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    const std::string command = "exec " + (env.empty() ? "" : "env " + env + " ") + KD_BINARY + " " + args;
    execl("/bin/sh", "sh", "-c", command.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

// The exit code of a child (128 + N when killed by signal N).
inline int wait_exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline bool wait_for(const std::function<bool()>& done, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// The names of the checkpoints in WORKDIR/checkpoints.
inline std::vector<std::string> checkpoint_names(const fs::path& workdir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(workdir / "checkpoints")) names.push_back(e.path().filename());
  return names;
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline std::vector<std::pair<std::string, torch::Tensor>> params_at(const fs::path& workdir, int64_t step) {
  return kd::checkpoints::read_checkpoint_tensors((workdir / "checkpoints" / ("ckpt_" + std::to_string(step))).string(),
                                                  "params");
}

inline bool same_params(const fs::path& a, const fs::path& b, int64_t step) {
  const auto x = params_at(a, step), y = params_at(b, step);
  if (x.size() != y.size()) return false;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (x[i].first != y[i].first || !x[i].second.equal(y[i].second)) return false;
  }
  return true;
}

// The steps of `collection` in WORKDIR/metrics.jsonl, in file order.
inline std::vector<int64_t> logged_steps(const fs::path& workdir, const std::string& collection) {
  std::vector<int64_t> steps;
  for (const auto& r : kd::writers::read_jsonl((workdir / "metrics.jsonl").string())) {
    if (r.collection == collection) steps.push_back(r.step);
  }
  return steps;
}

inline double value_of(const kd::writers::JsonlRecord& r, const std::string& name) {
  for (const auto& [k, v] : r.values) {
    if (k == name) return v;
  }
  FAIL("no " << name << " in the record of step " << r.step);
  return 0;
}

}  // namespace kd_e2e
