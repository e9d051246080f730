#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "tests/temp_dir.h"
#include "trainer/cli/cli.h"
#include "trainer/common/version.h"
#include "trainer/config/node.h"
#include "trainer/models/model.h"

namespace fs = std::filesystem;

namespace {

// Runs kd::cli::run in this process with `args`; returns the exit code, with stdout and stderr in
// `out` and `err`.
int run_cli(std::vector<std::string> args, std::string* out = nullptr, std::string* err = nullptr,
            kd::cli::Options options = {}) {
  args.insert(args.begin(), options.name);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::ostringstream captured_out, captured_err;
  auto* old_out = std::cout.rdbuf(captured_out.rdbuf());
  auto* old_err = std::cerr.rdbuf(captured_err.rdbuf());
  int code = -1;
  try {
    code = kd::cli::run(static_cast<int>(args.size()), argv.data(), options);
  } catch (...) {
    std::cout.rdbuf(old_out);
    std::cerr.rdbuf(old_err);
    throw;
  }
  std::cout.rdbuf(old_out);
  std::cerr.rdbuf(old_err);
  if (out) *out = captured_out.str();
  if (err) *err = captured_err.str();
  return code;
}

const char* kCliExperiment = R"(
seed: 0
num_train_steps: 20
log_metrics_every: 10
num_threads: 1
train_ds: {type: Synthetic, num_examples: 64, num_features: 4, num_classes: 2, batch_size: 16}
model: {type: MLP, input_size: 4, hidden_sizes: [8], output_size: 2}
train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels}}
optimizer: {type: sgd, learning_rate: 0.1}
)";

// A model of a "user's own": a linear map, registered under a name no built-in has.
class ProbeModel : public kd::models::Model {
 public:
  explicit ProbeModel(const kd::config::Node& o) : Model(o, {{"x", "batch.image"}}) {
    linear_ = register_module("linear", torch::nn::Linear(o.get_int("input_size"), o.get_int("output_size")));
  }
  kd::Tree forward(const kd::Tree& inputs) override {
    return kd::Tree::dict({{"logits", linear_(inputs.at("x").tensor().flatten(1).to(torch::kFloat))}});
  }

 private:
  torch::nn::Linear linear_{nullptr};
};

}  // namespace

TEST_CASE("kd::cli::run trains with a component the program registered, logging to the caller's logger") {
  if (!kd::models::registry().contains("CliTestProbe")) {
    kd::models::registry().add<ProbeModel>("CliTestProbe", "input_size, output_size (a test's model)");
  }
  const fs::path dir = kd::testing::fresh_dir("kd_cli_test_");
  fs::create_directories(dir);
  std::ofstream(dir / "exp.yaml") << kCliExperiment;

  std::ostringstream lines;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(lines);
  sink->set_pattern("<%l> %v");
  auto logger = std::make_shared<spdlog::logger>("caller", sink);

  std::string out, err;
  const int code = run_cli({"train", "--cfg=" + (dir / "exp.yaml").string(), "--cfg.workdir=" + (dir / "wd").string(),
                            "--cfg.model={type: CliTestProbe, input_size: 4, output_size: 2}"},
                           &out, &err, {.name = "my_trainer", .log = logger});
  INFO(err);
  REQUIRE(code == 0);
  const std::string logged = lines.str();
  INFO(logged);
  // Every line reached the caller's logger with its level, in its pattern.
  CHECK_THAT(logged, Catch::Contains("<info> workdir: " + (dir / "wd").string()) &&
                         Catch::Contains("<info> done: step 20 of 20"));
  // The workdir's log keeps them too, in kd's own pattern.
  std::ifstream log_txt(dir / "wd" / "log.txt");
  const std::string saved((std::istreambuf_iterator<char>(log_txt)), std::istreambuf_iterator<char>());
  CHECK_THAT(saved, Catch::Contains("[info] done: step 20 of 20"));
  CHECK(fs::exists(dir / "wd" / "checkpoints" / "ckpt_20"));
  fs::remove_all(dir);
}

TEST_CASE("kd::cli::run names the program in its errors and suggests the nearest command or type") {
  std::string out, err;
  CHECK(run_cli({"trian"}, &out, &err, {.name = "my_trainer"}) == 2);
  CHECK_THAT(err, Catch::StartsWith("my_trainer: error: unknown command \"trian\". Did you mean \"train\"?"));

  CHECK(run_cli({"configs", "Acuracy"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("kd: error: no component type \"Acuracy\"; did you mean \"Accuracy\"?"));

  CHECK(run_cli({"train", "--cfg=" + kd::testing::fresh_dir("kd_cli_missing_").string() + ".yaml"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::StartsWith("kd: error: "));

  CHECK(run_cli({"train"}, &out, &err) == 2);  // --cfg is required: CLI11's message, exit code 2
  CHECK_THAT(err, Catch::Contains("--cfg"));
}

TEST_CASE("every number a kd command takes is checked for its range, naming the flag") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"export", "--workdir=w", "--out=o", "--step=-1"}, "--step"},
      {{"eval", "--workdir=w", "--step=-3"}, "--step"},
      {{"eval", "--workdir=w", "--follow", "--poll=0"}, "--poll"},
      {{"eval", "--workdir=w", "--follow", "--timeout=-5"}, "--timeout"},
      {{"launch", "--nproc=0", "--", "train", "--cfg=x"}, "--nproc"},
      {{"launch", "--nproc=2", "--master-port=70000", "--", "train", "--cfg=x"}, "--master"},
      {{"launch", "--nproc=2", "--master-port=-1", "--", "train", "--cfg=x"}, "--master"},
      {{"launch", "--nproc=2", "--grace=-1", "--", "train", "--cfg=x"}, "--grace"},
      // NaN compares false with every bound, and a duration cannot hold inf or 1e300 seconds.
      {{"eval", "--workdir=w", "--follow", "--poll=nan"}, "--poll"},
      {{"eval", "--workdir=w", "--follow", "--timeout=inf"}, "--timeout"},
      {{"eval", "--workdir=w", "--follow", "--timeout=1e300"}, "--timeout"},
      {{"launch", "--nproc=2", "--grace=nan", "--", "train", "--cfg=x"}, "--grace"},
      {{"launch", "--nproc=2", "--grace=1e300", "--", "train", "--cfg=x"}, "--grace"},
  };
  for (const auto& [args, flag] : cases) {
    std::string out, err;
    INFO(args[0] << " " << args.back());
    CHECK(run_cli(args, &out, &err) == 2);
    CHECK_THAT(err, Catch::Contains(flag));
  }
}

TEST_CASE("kd --version names kd's version and the LibTorch it was built with") {
  std::string out;
  REQUIRE(run_cli({"--version"}, &out) == 0);
  CHECK_THAT(out, Catch::StartsWith(std::string("kd ") + KD_VERSION + " (LibTorch "));
  CHECK(kd::cli::version() == out.substr(0, out.find('\n')));
  REQUIRE(run_cli({"--version"}, &out, nullptr, {.name = "my_trainer"}) == 0);
  CHECK_THAT(out, Catch::StartsWith("my_trainer on kd " + std::string(KD_VERSION)));
}

TEST_CASE("kd::cli::end_process flushes what is buffered and exits with the code") {
  const fs::path dir = kd::testing::fresh_dir("kd_cli_end_");
  fs::create_directories(dir);
  const fs::path file = dir / "unclosed.txt";
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const std::string big(10000, 'x');  // more than one stdio buffer
  std::fflush(nullptr);               // the child must not inherit this process's buffers
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDOUT_FILENO);
    std::printf("printf %s\n", big.c_str());
    std::cout << "cout end" << std::endl << "cout unflushed";
    std::FILE* f = std::fopen(file.c_str(), "w");  // left open: end_process flushes every FILE
    std::fputs("kept", f);
    kd::cli::end_process(3);
  }
  close(fds[1]);
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) out.append(buffer, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  const std::string expected = "printf " + big + "\ncout end\ncout unflushed";
  CHECK(out.size() == expected.size());
  CHECK((out == expected));
  std::ifstream in(file);
  const std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(kept == "kept");
  fs::remove_all(dir);
}
