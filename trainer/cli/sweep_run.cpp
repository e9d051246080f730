// kd sweep's points as child processes: started N at a time, signals passed on, each one's end
// reported (sweep.h says how).
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/cli/sweep_internal.h"
#include "trainer/common/error.h"

namespace kd::cli::sweep_detail {
namespace {

namespace fs = std::filesystem;

volatile std::sig_atomic_t g_sweep_signal = 0;
extern "C" void on_sweep_signal(int signal) { g_sweep_signal = signal; }

// Whether the point's run is complete: its newest valid checkpoint is at num_train_steps.
bool finished(const std::string& cfg, const std::vector<config::Override>& overrides) {
  const config::Node experiment = config::load_experiment(cfg, overrides);
  const std::string workdir = experiment.get_string("workdir");
  if (!fs::exists(fs::path(workdir) / "checkpoints")) return false;
  const auto latest = checkpoints::Checkpointer(workdir + "/checkpoints", {}).latest_valid();
  return latest && experiment.has("num_train_steps") && latest->step >= experiment.get_int("num_train_steps");
}

pid_t start_point(const std::vector<std::string>& argv, const fs::path& log) {
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw Error(std::string("kd sweep: fork failed: ") + std::strerror(errno));
  if (pid > 0) return pid;
  // The point: its own process group (a Ctrl-C reaches the sweep, which passes it on), SIGTERM
  // when the sweep dies, stdin from /dev/null, its output appended to its log.
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(128 + SIGTERM);
  const int in = open("/dev/null", O_RDONLY);
  const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (in < 0 || out < 0) _exit(127);
  dup2(in, 0);
  dup2(out, 1);
  dup2(out, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  std::fprintf(stderr, "kd sweep: cannot run %s: %s\n", args[0], std::strerror(errno));
  _exit(127);
}

std::string last_lines(const fs::path& log, std::size_t n) {
  std::ifstream in(log);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::string out;
  for (std::size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) out += "    " + lines[i] + "\n";
  return out;
}

}  // namespace

std::vector<config::Override> point_overrides(const std::vector<config::Override>& base, const Point& p) {
  std::vector<config::Override> out = base;
  for (const auto& [key, value] : p.values) out.emplace_back(key, value);
  return out;
}

std::vector<std::string> point_command(const std::string& program, const std::string& cfg,
                                       const std::vector<config::Override>& overrides, int64_t threads) {
  std::vector<std::string> argv{program, "train", "--cfg=" + cfg};
  for (const auto& [key, value] : overrides) argv.push_back("--cfg." + key + "=" + value);
  if (threads > 0) argv.push_back("--cfg.num_threads=" + std::to_string(threads));
  return argv;
}

int run_points(const SweepOptions& options, const std::vector<config::Override>& base, const std::vector<Point>& points,
               const fs::path& dir, int64_t threads) {
  struct sigaction action {};
  action.sa_handler = on_sweep_signal;
  sigemptyset(&action.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &action, nullptr);
  signal(SIGCHLD, SIG_DFL);  // an inherited SIG_IGN would reap the points before kd sees how they ended

  std::vector<std::size_t> todo;
  for (std::size_t i = 0; i < points.size(); ++i) {
    if (finished(options.cfg, point_overrides(base, points[i]))) {
      std::cout << "[" << i + 1 << "/" << points.size() << "] " << points[i].name << ": finished already\n";
    } else {
      todo.push_back(i);
    }
  }
  std::map<pid_t, std::size_t> running;
  std::vector<std::string> failed;
  int stop_signal = 0;
  bool killed = false;
  std::size_t next = 0;
  while (next < todo.size() || !running.empty()) {
    if (g_sweep_signal != 0 && stop_signal == 0) {
      stop_signal = g_sweep_signal;
      g_sweep_signal = 0;
      std::cout << "kd sweep: " << strsignal(stop_signal)
                << ": stopping the running points (each saves a checkpoint)\n";
      for (const auto& [pid, i] : running) kill(pid, SIGTERM);
    } else if (g_sweep_signal != 0 && !killed) {  // a second signal: now
      for (const auto& [pid, i] : running) kill(pid, SIGKILL);
      killed = true;
    }
    while (stop_signal == 0 && next < todo.size() && static_cast<int64_t>(running.size()) < options.jobs) {
      const std::size_t i = todo[next++];
      const fs::path log = dir / "logs" / (points[i].name + ".txt");
      const pid_t pid =
          start_point(point_command(options.program, options.cfg, point_overrides(base, points[i]), threads), log);
      running[pid] = i;
      std::cout << "[" << i + 1 << "/" << points.size() << "] " << points[i].name << ": started (log: " << log.string()
                << ")\n";
    }
    if (stop_signal != 0) next = todo.size();
    if (running.empty()) break;
    // Polled, so that a signal is seen within 50 ms whenever it comes.
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid == 0 || (pid < 0 && errno == EINTR)) {
      const timespec pause{0, 50'000'000};
      nanosleep(&pause, nullptr);
      continue;
    }
    if (pid < 0) throw Error(std::string("kd sweep: waiting for the points failed: ") + std::strerror(errno));
    const auto it = running.find(pid);
    if (it == running.end()) continue;
    const std::size_t i = it->second;
    running.erase(it);
    const fs::path log = dir / "logs" / (points[i].name + ".txt");
    std::cout << "[" << i + 1 << "/" << points.size() << "] " << points[i].name << ": ";
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      std::cout << (stop_signal ? "stopped" : "finished") << "\n";
    } else {
      const std::string how = WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                                                : std::string("killed by ") + strsignal(WTERMSIG(status));
      std::cout << "failed (" << how << "); the end of " << log.string() << ":\n" << last_lines(log, 5);
      if (!stop_signal) failed.push_back(points[i].name);
    }
    std::cout.flush();
  }
  if (stop_signal != 0) {
    std::cout << "kd sweep: stopped; the same command resumes it\n";
    return 128 + stop_signal;
  }
  if (!failed.empty()) {
    std::cout << "kd sweep: " << failed.size() << " of " << points.size() << " points failed (their logs are in "
              << (dir / "logs").string() << "); the same command reruns them\n";
    return 1;
  }
  std::cout << "kd sweep: all " << points.size() << " points finished in " << dir.string()
            << " (kd report --workdir=" << dir.string() << " shows them)\n";
  return 0;
}

}  // namespace kd::cli::sweep_detail
