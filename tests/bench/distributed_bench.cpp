// Data-parallel training on this machine: the time of one gradient all-reduce against the
// gradient's size (2 ranks, Gloo over loopback), and the flagship MLP's training steps/s
// (784-512-256-10, Adam, global batch 128) for 1 process and for 2 ranks, interleaved.
//
//   build/tests/bench/distributed_bench [--rounds 5] [--steps 200] [--reduces 50]
//
// Every configuration runs as fresh processes (this program re-executed as workers with the
// torchrun variables set), so the ranks are real processes as in `kd launch`.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/clock.h"
#include "trainer/config/node.h"
#include "trainer/distributed/distributed.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/models/model.h"
#include "trainer/step/train_step.h"

namespace {

namespace dist = kd::distributed;

std::shared_ptr<dist::ProcessGroup> join(int world_size) {
  const auto world = dist::world_from_environment();
  if (!world || world->world_size != world_size) return nullptr;
  return dist::ProcessGroup::create(*world, dist::Options{}, c10::Device(c10::kCPU));
}

// Worker: mean seconds of one GradientReducer::reduce of `numel` float gradients.
double time_reduce(int64_t numel, int reduces) {
  auto group = join(2);
  auto p = torch::zeros({numel}).requires_grad_(true);
  p.mutable_grad() = torch::ones({numel});
  dist::GradientReducer reducer(group, {p}, dist::Options{}.bucket_bytes);
  for (int i = 0; i < 3; ++i) reducer.reduce({0.0, 0.0});
  group->barrier("start");
  const auto start = kd::Clock::now();
  for (int i = 0; i < reduces; ++i) reducer.reduce({0.0, 0.0});
  return kd::seconds_since(start) / reduces;
}

// Worker: steps/s of the flagship MLP's TrainStep on this rank's share of a global batch of 128.
double time_steps(int world_size, int steps) {
  auto group = world_size > 1 ? join(world_size) : nullptr;
  const int rank = group ? group->rank() : 0;
  auto aux = std::make_shared<kd::train::Auxiliaries>();
  aux->losses.emplace_back("xent",
                           kd::losses::registry().create(kd::config::Node::parse(
                               "{type: SoftmaxCrossEntropyWithIntLabels, logits: preds.logits, labels: batch.label}")));
  aux->metrics.emplace_back("accuracy", kd::metrics::registry().create(kd::config::Node::parse("{type: Accuracy}")));
  torch::manual_seed(0);
  auto model = kd::models::registry().create(
      kd::config::Node::parse("{type: MLP, input_size: 784, hidden_sizes: [512, 256], output_size: 10}"));
  kd::train::TrainStep step(model, kd::config::Node::parse("{type: adam, learning_rate: 1e-3}"), aux);
  step.set_nan_policy(kd::train::NanPolicy::kIgnore);  // as a hand-written loop: no check of the loss
  std::unique_ptr<dist::GradientReducer> reducer;
  if (group) {
    reducer = std::make_unique<dist::GradientReducer>(group, model->parameters(), dist::Options{}.bucket_bytes);
    step.set_gradient_hook([&](bool non_finite) { return reducer->reduce({non_finite ? 1.0 : 0.0, 0.0})[0] > 0; });
  }
  const int64_t per_rank = 128 / world_size;
  torch::manual_seed(1 + rank);
  std::vector<kd::Tree> batches;
  for (int i = 0; i < 8; ++i) {
    batches.push_back(
        kd::Tree::dict({{"image", torch::rand({per_rank, 28, 28})}, {"label", torch::randint(0, 10, {per_rank})}}));
  }
  kd::train::TrainState state = step.init();
  for (int i = 0; i < 10; ++i)
    state = step.step(state, batches[static_cast<std::size_t>(i) % 8], {.with_summaries = false}).first;
  if (group) group->barrier("start");
  const auto start = kd::Clock::now();
  for (int i = 0; i < steps; ++i)
    state = step.step(state, batches[static_cast<std::size_t>(i) % 8], {.with_summaries = false}).first;
  return steps / kd::seconds_since(start);
}

// Runs `args` as `nproc` worker processes of this program; returns rank 0's printed number.
double run_workers(const std::string& self, int nproc, int threads, const std::vector<std::string>& args) {
  const int port = kd::distributed::free_port();
  std::vector<pid_t> pids;
  int fds[2];
  if (pipe(fds) != 0) return -1;
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      if (r == 0) dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
      std::vector<char*> argv{const_cast<char*>(self.c_str()), const_cast<char*>("--worker")};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(self.c_str(), argv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  close(fds[1]);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  for (pid_t pid : pids) waitpid(pid, nullptr, 0);
  return out.empty() ? -1 : std::stod(out);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--worker") == 0) {
    torch::set_num_threads(std::atoi(std::getenv("OMP_NUM_THREADS")));
    const std::string what = argv[2];
    double value = 0;
    if (what == "reduce") value = time_reduce(std::atoll(argv[3]), std::atoi(argv[4]));
    if (what == "steps") value = time_steps(std::atoi(argv[3]), std::atoi(argv[4]));
    if (dist::world_from_environment().value_or(dist::WorldInfo{}).rank == 0) std::printf("%.9g\n", value);
    return 0;
  }
  int rounds = 5, steps = 200, reduces = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--rounds") rounds = std::atoi(argv[i + 1]);
    if (flag == "--steps") steps = std::atoi(argv[i + 1]);
    if (flag == "--reduces") reduces = std::atoi(argv[i + 1]);
  }
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  self[len] = '\0';

  std::printf("gradient all-reduce, 2 ranks, Gloo over loopback (%d reduces, median of %d rounds):\n", reduces, rounds);
  std::printf("  %12s %10s %12s %14s\n", "floats", "MB", "ms/reduce", "algbw GB/s");
  for (int64_t numel :
       {int64_t{1'000}, int64_t{10'000}, int64_t{100'000}, int64_t{535'818}, int64_t{1'000'000}, int64_t{10'000'000}}) {
    std::vector<double> t;
    for (int r = 0; r < rounds; ++r)
      t.push_back(run_workers(self, 2, 1, {"reduce", std::to_string(numel), std::to_string(reduces)}));
    const double s = median(t);
    const double mb = static_cast<double>(numel) * 4 / 1e6;
    std::printf("  %12ld %10.2f %12.3f %14.3f%s\n", numel, mb, s * 1e3, mb / 1e3 / s,
                numel == 535'818 ? "   <- the flagship MLP's gradients" : "");
    std::fflush(stdout);
  }

  std::printf("\nflagship MLP training steps/s, global batch 128 (%d steps, median of %d interleaved rounds):\n", steps,
              rounds);
  const std::vector<std::tuple<std::string, int, int>> configs{
      {"1 process, 1 thread", 1, 1}, {"1 process, 2 threads", 1, 2}, {"2 ranks x 1 thread", 2, 1}};
  std::map<std::string, std::vector<double>> rates;
  for (int r = 0; r < rounds; ++r) {
    for (const auto& [name, nproc, threads] : configs) {
      rates[name].push_back(run_workers(self, nproc, threads, {"steps", std::to_string(nproc), std::to_string(steps)}));
    }
  }
  const double base = median(rates["1 process, 1 thread"]);
  for (const auto& [name, nproc, threads] : configs) {
    const double m = median(rates[name]);
    std::printf("  %-22s %8.1f steps/s   x%.2f of 1 process, 1 thread\n", name.c_str(), m, m / base);
  }
  return 0;
}
