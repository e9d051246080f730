// Data parallelism across two hosts: two network namespaces joined by a veth pair stand for two
// machines (each its own interfaces, addresses and ports; traffic stays between the two), with
// one rank in each, started through `kd launch --nnodes=2`, torchrun's variables or SLURM's.
// Making namespaces takes root (CI runs as root); elsewhere the tests say why they did nothing.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>

#include "tests/e2e/helpers.h"

using namespace kd_e2e;

namespace {

constexpr const char* kHostA = "10.231.7.1";
constexpr const char* kHostB = "10.231.7.2";

// Two network namespaces, A and B, joined by a veth pair (A: 10.231.7.1, B: 10.231.7.2), each
// with its own /etc/hosts naming them kdnode1 and kdnode2; removed when it goes.
class TwoHosts {
 public:
  TwoHosts() {
    const std::string id = std::to_string(getpid() % 100000);
    a_ = "kd_a_" + id, b_ = "kd_b_" + id;
    const std::string va = "kdva" + id, vb = "kdvb" + id;
    for (const std::string& ns : {a_, b_}) {
      fs::create_directories("/etc/netns/" + ns);
      std::ofstream("/etc/netns/" + ns + "/hosts") << "127.0.0.1 localhost\n"
                                                   << kHostA << " kdnode1\n"
                                                   << kHostB << " kdnode2\n";
    }
    const std::string commands = "ip netns add " + a_ + " && ip netns add " + b_ + " && ip link add " + va +
                                 " type veth peer name " + vb + " && ip link set " + va + " netns " + a_ +
                                 " && ip link set " + vb + " netns " + b_ + " && ip -n " + a_ + " addr add " + kHostA +
                                 "/24 dev " + va + " && ip -n " + b_ + " addr add " + kHostB + "/24 dev " + vb +
                                 " && ip -n " + a_ + " link set " + va + " up && ip -n " + b_ + " link set " + vb +
                                 " up && ip -n " + a_ + " link set lo up && ip -n " + b_ + " link set lo up";
    const Result r = run_command(commands, /*with_stderr=*/true);
    if (r.code != 0) {
      why_not_ = "network namespaces cannot be made here (" + r.output + "); these tests need root and iproute2";
    }
  }
  ~TwoHosts() {
    run_command("ip netns del " + a_ + "; ip netns del " + b_, true);
    fs::remove_all("/etc/netns/" + a_);
    fs::remove_all("/etc/netns/" + b_);
  }
  TwoHosts(const TwoHosts&) = delete;
  TwoHosts& operator=(const TwoHosts&) = delete;

  // Empty when the namespaces work.
  const std::string& why_not() const { return why_not_; }
  // `kd ARGS` started in host A (0) or B (1), with `env` added, its output into `log`.
  pid_t spawn(int host, const std::string& env, const std::string& args, const fs::path& log) const {
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      const std::string command =
          "exec ip netns exec " + (host == 0 ? a_ : b_) + " env " + env + " " + KD_BINARY + " " + args;
      execl("/bin/sh", "sh", "-c", command.c_str(), nullptr);
      _exit(127);
    }
    return pid;
  }

 private:
  std::string a_, b_, why_not_;
};

// The flagship MLP for `steps` steps of the global batch 128, one thread, a test eval at the end.
std::string two_host_flagship(const fs::path& workdir, int64_t steps, const std::string& extra = "") {
  return "train --cfg=" + kMlp + " --cfg.workdir=" + workdir.string() +
         " --cfg.num_train_steps=" + std::to_string(steps) +
         " --cfg.log_metrics_every=10 --cfg.num_threads=1 --cfg.checkpointer.save_interval_steps=100000"
         " --cfg.evals.test.ds.num_examples=1000 '--cfg.evals.test.run={type: Final}' " +
         extra;
}

// One process on the same two halves of each batch as the 2 ranks: their bit-for-bit reference
// (distributed_test.cpp says why).
fs::path one_process_reference(int64_t steps) {
  const fs::path dir = fresh_dir();
  const Result r = run_kd(two_host_flagship(dir, steps, "--cfg.optimizer.accumulate_steps=2"));
  INFO(r.output);
  REQUIRE(r.code == 0);
  return dir;
}

int exit_code_within(pid_t pid, double seconds) {
  int status = 0;
  if (!wait_for([&] { return waitpid(pid, &status, WNOHANG) == pid; }, seconds)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("two hosts over TCP, started by kd launch --nnodes=2 and by SLURM's variables, end where one process does") {
  const TwoHosts hosts;
  if (!hosts.why_not().empty()) {
    WARN("skipped: " << hosts.why_not());
    return;
  }
  const fs::path reference = one_process_reference(60);

  // kd launch on each host, torchrun's multi-node flags.
  const fs::path launched = fresh_dir();
  const std::string launch =
      "launch --nnodes=2 --nproc=1 --master-addr=" + std::string(kHostA) + " --master-port=29561 --node-rank=";
  const pid_t a =
      hosts.spawn(0, "X=1", launch + "0 -- " + two_host_flagship(launched, 60), launched.string() + "_a.log");
  const pid_t b =
      hosts.spawn(1, "X=1", launch + "1 -- " + two_host_flagship(launched, 60), launched.string() + "_b.log");
  const int code_a = exit_code_within(a, 180), code_b = exit_code_within(b, 60);
  const std::string log_a = read_text(launched.string() + "_a.log");
  INFO(log_a << read_text(launched.string() + "_b.log"));
  REQUIRE(code_a == 0);
  REQUIRE(code_b == 0);
  CHECK_THAT(log_a, Catch::Contains("ranks 0-0 of 2 (node 0 of 2)") &&
                        Catch::Contains("data parallel: 2 ranks (gloo backend, rendezvous 10.231.7.1:29561"));
  CHECK(same_params(launched, reference, 60));

  // srun's variables, no wrapper: the rendezvous on the node list's first host, the port from the job id.
  const fs::path slurm = fresh_dir();
  const std::string job =
      "SLURM_JOB_ID=4242 SLURM_NTASKS=2 SLURM_TASKS_PER_NODE='1(x2)' "
      "SLURM_JOB_NODELIST='kdnode[1-2]' SLURM_LOCALID=0 ";
  const pid_t s0 =
      hosts.spawn(0, job + "SLURM_PROCID=0 SLURM_NODEID=0", two_host_flagship(slurm, 60), slurm.string() + "_0.log");
  const pid_t s1 =
      hosts.spawn(1, job + "SLURM_PROCID=1 SLURM_NODEID=1", two_host_flagship(slurm, 60), slurm.string() + "_1.log");
  const int code0 = exit_code_within(s0, 180), code1 = exit_code_within(s1, 60);
  const std::string log0 = read_text(slurm.string() + "_0.log");
  INFO(log0 << read_text(slurm.string() + "_1.log"));
  REQUIRE(code0 == 0);
  REQUIRE(code1 == 0);
  CHECK_THAT(log0, Catch::Contains("joining a job of 2 ranks at kdnode1:19242 as rank 0 (from SLURM job 4242"));
  CHECK(same_params(slurm, reference, 60));
  for (const auto& dir : {reference, launched, slurm}) fs::remove_all(dir);
}

TEST_CASE("a rank killed on one host stops the other with kd's message, within distributed.timeout_s") {
  const TwoHosts hosts;
  if (!hosts.why_not().empty()) {
    WARN("skipped: " << hosts.why_not());
    return;
  }
  const fs::path dir = fresh_dir();
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=" + std::string(kHostA) + " MASTER_PORT=29562 RANK=";
  const std::string args = two_host_flagship(dir, 100000, "--cfg.distributed.timeout_s=20");
  const pid_t a = hosts.spawn(0, env + "0", args, dir.string() + "_a.log");
  const pid_t b = hosts.spawn(1, env + "1", args, dir.string() + "_b.log");
  REQUIRE(wait_for([&] { return read_text(dir.string() + "_a.log").find("step 10 ") != std::string::npos; }, 120));
  kill(b, SIGKILL);
  waitpid(b, nullptr, 0);
  const int code = exit_code_within(a, 40);
  const std::string log = read_text(dir.string() + "_a.log");
  INFO(log);
  CHECK(code == 2);
  CHECK_THAT(log, Catch::Contains("kd: error: rank 0 of 2: the all-reduce of the gradients failed"));
  fs::remove_all(dir);
}

TEST_CASE(
    "SIGUSR1 to every rank (SLURM's warning before a time limit) saves a checkpoint, requeues, and resumes exactly") {
  const TwoHosts hosts;
  if (!hosts.why_not().empty()) {
    WARN("skipped: " << hosts.why_not());
    return;
  }
  const fs::path reference = one_process_reference(400);
  const fs::path dir = fresh_dir();
  // A stand-in for SLURM's scontrol: it records what it was asked.
  const fs::path bin = dir.string() + "_bin";
  fs::create_directories(bin);
  std::ofstream(bin / "scontrol") << "#!/bin/sh\necho \"$@\" >> " << (bin / "calls.txt").string() << "\n";
  fs::permissions(bin / "scontrol", fs::perms::owner_all);
  const std::string env = "PATH=" + bin.string() +
                          ":$PATH SLURM_JOB_ID=77 WORLD_SIZE=2 MASTER_ADDR=" + std::string(kHostA) +
                          " MASTER_PORT=29563 RANK=";
  const std::string args = two_host_flagship(dir, 400);
  const pid_t a = hosts.spawn(0, env + "0", args, dir.string() + "_a.log");
  const pid_t b = hosts.spawn(1, env + "1", args, dir.string() + "_b.log");
  REQUIRE(wait_for([&] { return read_text(dir.string() + "_a.log").find("step 20 ") != std::string::npos; }, 120));
  kill(a, SIGUSR1);
  kill(b, SIGUSR1);
  const int code_a = exit_code_within(a, 60), code_b = exit_code_within(b, 60);
  const std::string log_a = read_text(dir.string() + "_a.log");
  INFO(log_a);
  CHECK(code_a == 0);
  CHECK(code_b == 0);
  CHECK_THAT(log_a, Catch::Contains("stopped by the time-limit signal") &&
                        Catch::Contains("requeued SLURM job 77 (scontrol requeue)"));
  CHECK(read_text(bin / "calls.txt") == "requeue 77\n");  // rank 0 alone requeued
  REQUIRE(checkpoint_names(dir).size() == 1);
  // The requeued job: the same command resumes and ends where one process does.
  const pid_t a2 = hosts.spawn(0, env + "0", args, dir.string() + "_a2.log");
  const pid_t b2 = hosts.spawn(1, env + "1", args, dir.string() + "_b2.log");
  CHECK(exit_code_within(a2, 180) == 0);
  CHECK(exit_code_within(b2, 60) == 0);
  CHECK_THAT(read_text(dir.string() + "_a2.log"), Catch::Contains("resuming from step"));
  CHECK(same_params(dir, reference, 400));
  for (const auto& d : {reference, dir, bin}) fs::remove_all(d);
}
