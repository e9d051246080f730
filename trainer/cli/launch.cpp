#include "trainer/cli/launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "trainer/common/error.h"
#include "trainer/distributed/distributed.h"

namespace kd::cli {
namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_signals = 0;
extern "C" void on_launcher_signal(int) { g_signals = g_signals + 1; }

}  // namespace

std::string self_executable() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) throw IOError("cannot find the kd executable (/proc/self/exe); pass its path");
  return std::string(buf, static_cast<std::size_t>(n));
}

namespace {

// One output stream of one rank, forwarded line by line with a prefix.
struct Stream {
  int fd = -1;
  FILE* out = nullptr;
  std::string pending;
};

struct Rank {
  pid_t pid = -1;
  bool running = true;
  int exit_code = 0;
  bool signaled = false;
  Stream streams[2];
};

std::string describe_exit(const Rank& rank) {
  return rank.signaled ? "was killed by signal " + std::to_string(rank.exit_code - 128)
                       : "exited with code " + std::to_string(rank.exit_code);
}

// Whatever happens in launch() (an error while starting the ranks included), no rank outlives
// it, no descriptor leaks, and the launcher's signal dispositions come back.
struct Job {
  std::vector<Rank> ranks;
  struct sigaction old_int {
  }, old_term{}, old_hup{}, old_chld{};

  Job() {
    struct sigaction action {};
    action.sa_handler = on_launcher_signal;
    sigemptyset(&action.sa_mask);
    g_signals = 0;
    sigaction(SIGINT, &action, &old_int);
    sigaction(SIGTERM, &action, &old_term);
    sigaction(SIGHUP, &action, &old_hup);  // the terminal or ssh session went away: stop cleanly
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;  // an inherited SIG_IGN would make waitpid() lose the ranks
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGCHLD, &dfl, &old_chld);
  }
  ~Job() {
    for (auto& rank : ranks) {
      if (rank.pid > 0 && rank.running) {
        ::kill(rank.pid, SIGKILL);
        ::waitpid(rank.pid, nullptr, 0);
      }
      for (auto& s : rank.streams) {
        if (s.fd >= 0) ::close(s.fd);
      }
    }
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGHUP, &old_hup, nullptr);
    sigaction(SIGCHLD, &old_chld, nullptr);
  }
};

void forward(Stream& s, const std::string& prefix, bool flush_all) {
  std::size_t start = 0;
  while (true) {
    const std::size_t nl = s.pending.find('\n', start);
    if (nl == std::string::npos) break;
    std::fprintf(s.out, "%s%.*s\n", prefix.c_str(), static_cast<int>(nl - start), s.pending.data() + start);
    start = nl + 1;
  }
  s.pending.erase(0, start);
  if (flush_all && !s.pending.empty()) {
    std::fprintf(s.out, "%s%s\n", prefix.c_str(), s.pending.c_str());
    s.pending.clear();
  }
  std::fflush(s.out);
}

}  // namespace

namespace {

// In the child after fork(): becomes rank `r` of `options` (its own process group, stdin from
// /dev/null, stdout and stderr into the launcher's pipes, the torchrun variables) and execs.
[[noreturn]] void exec_rank(int r, const LaunchOptions& options, const std::string& program, int port,
                            pid_t launcher_pid, int out_fd, int err_fd, const sigset_t& mask) {
  // Its own process group: a Ctrl-C on the terminal reaches the launcher alone, which passes one
  // SIGTERM on (so every rank saves once); and it stops if the launcher dies.
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != launcher_pid) ::_exit(128 + SIGTERM);
  ::dup2(out_fd, STDOUT_FILENO);
  ::dup2(err_fd, STDERR_FILENO);
  const int null = ::open("/dev/null", O_RDONLY);  // a background group must not read the terminal
  if (null >= 0) {
    ::dup2(null, STDIN_FILENO);
    if (null != STDIN_FILENO) ::close(null);
  }
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) ::signal(sig, SIG_DFL);
  // If the launcher dies, its rank still saves on the SIGTERM it gets: writing to the pipe
  // nobody reads then fails instead of killing it.
  ::signal(SIGPIPE, SIG_IGN);
  ::sigprocmask(SIG_SETMASK, &mask, nullptr);
  ::setenv("RANK", std::to_string(options.node_rank * options.nproc + r).c_str(), 1);
  ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
  ::setenv("WORLD_SIZE", std::to_string(options.nnodes * options.nproc).c_str(), 1);
  ::setenv("LOCAL_WORLD_SIZE", std::to_string(options.nproc).c_str(), 1);
  ::setenv("GROUP_RANK", std::to_string(options.node_rank).c_str(), 1);
  ::setenv("MASTER_ADDR", options.master_addr.c_str(), 1);
  ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const auto& a : options.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(program.c_str(), argv.data());
  std::fprintf(stderr, "kd launch: cannot run %s: %s\n", program.c_str(), std::strerror(errno));
  ::_exit(127);
}

// Starts rank `r` with its output into pipes the launcher reads (`rank`'s streams).
void start_rank(Rank& rank, int r, const LaunchOptions& options, const std::string& program, int port) {
  const pid_t launcher_pid = ::getpid();
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0)
    throw IOError(std::string("cannot create pipes for the ranks: ") + std::strerror(errno));
  rank.streams[0] = {out_pipe[0], stdout, {}};
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[1]);
    throw IOError(std::string("cannot create pipes for the ranks: ") + std::strerror(errno));
  }
  rank.streams[1] = {err_pipe[0], stderr, {}};
  // Signals wait while the child has the launcher's handlers (it resets them first).
  sigset_t stop_signals, before;
  sigemptyset(&stop_signals);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop_signals, sig);
  ::sigprocmask(SIG_BLOCK, &stop_signals, &before);
  const pid_t pid = ::fork();
  if (pid == 0) exec_rank(r, options, program, port, launcher_pid, out_pipe[1], err_pipe[1], before);
  ::sigprocmask(SIG_SETMASK, &before, nullptr);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (pid < 0) throw IOError(std::string("cannot start rank ") + std::to_string(r) + ": " + std::strerror(errno));
  rank.pid = pid;
}

// Forwards what the ranks wrote since the last look (waits up to 100 ms for something).
void forward_output(std::vector<Rank>& ranks) {
  std::vector<pollfd> fds;
  std::vector<std::pair<std::size_t, int>> owners;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    for (int s = 0; s < 2; ++s) {
      if (ranks[r].streams[s].fd >= 0) {
        fds.push_back({ranks[r].streams[s].fd, POLLIN, 0});
        owners.emplace_back(r, s);
      }
    }
  }
  if (fds.empty()) {
    ::usleep(50'000);
    return;
  }
  if (::poll(fds.data(), fds.size(), 100) <= 0) return;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    if (fds[i].revents == 0) continue;
    Stream& s = ranks[owners[i].first].streams[owners[i].second];
    char buf[65536];
    const ssize_t got = ::read(s.fd, buf, sizeof(buf));
    const std::string prefix = "[rank " + std::to_string(owners[i].first) + "] ";
    if (got > 0) {
      s.pending.append(buf, static_cast<std::size_t>(got));
      forward(s, prefix, false);
    } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
      forward(s, prefix, true);
      ::close(s.fd);
      s.fd = -1;
    }
  }
}

// Once every rank exited: what is left in the pipes (a rank's children may hold them open).
void drain_output(std::vector<Rank>& ranks) {
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    for (auto& s : ranks[r].streams) {
      if (s.fd < 0) continue;
      ::fcntl(s.fd, F_SETFL, O_NONBLOCK);
      char buf[65536];
      ssize_t got;
      while ((got = ::read(s.fd, buf, sizeof(buf))) > 0) s.pending.append(buf, static_cast<std::size_t>(got));
      forward(s, "[rank " + std::to_string(r) + "] ", true);
      ::close(s.fd);
      s.fd = -1;
    }
  }
}

// The ranks that ended since the last look. When several failed, a rank killed by a signal is
// taken as the cause (the others most likely failed because it went away).
struct Reaped {
  bool any_running = false;
  std::vector<std::size_t> failed;
  std::optional<std::size_t> cause;
};
Reaped reap(std::vector<Rank>& ranks) {
  Reaped out;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    auto& rank = ranks[r];
    if (!rank.running) continue;
    int status = 0;
    const pid_t done = ::waitpid(rank.pid, &status, WNOHANG);
    if (done == 0 || (done < 0 && errno == EINTR)) {
      out.any_running = true;
      continue;
    }
    rank.running = false;
    if (done < 0) {  // not our child any more (cannot happen with SIGCHLD at its default)
      rank.exit_code = 1;
    } else {
      rank.signaled = WIFSIGNALED(status);
      rank.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (rank.exit_code == 0) continue;
    out.failed.push_back(r);
    if (!out.cause || (rank.signaled && !ranks[*out.cause].signaled)) out.cause = r;
  }
  return out;
}

}  // namespace

int launch(const LaunchOptions& options) {
  if (options.nproc < 1) throw ConfigError("--nproc must be >= 1, got " + std::to_string(options.nproc));
  if (options.args.empty())
    throw ConfigError("kd launch needs the kd command to run, e.g. kd launch --nproc=2 -- train --cfg=FILE");
  if (options.nnodes < 1 || options.node_rank < 0 || options.node_rank >= options.nnodes) {
    throw ConfigError("--node-rank must be in [0, --nnodes), got " + std::to_string(options.node_rank) + " of " +
                      std::to_string(options.nnodes));
  }
  if (options.nnodes > 1 && options.master_port <= 0) {
    throw ConfigError("--nnodes=" + std::to_string(options.nnodes) +
                      " needs --master-port (the same on every node) and --master-addr (node 0's address, which "
                      "every node reaches)");
  }
  const std::string program = options.program.empty() ? self_executable() : options.program;
  const int port = options.master_port > 0 ? options.master_port : distributed::free_port();

  Job job;
  std::vector<Rank>& ranks = job.ranks;
  ranks.resize(static_cast<std::size_t>(options.nproc));
  for (int r = 0; r < options.nproc; ++r) start_rank(ranks[static_cast<std::size_t>(r)], r, options, program, port);
  std::string pids;
  for (const auto& rank : ranks) pids += (pids.empty() ? "" : ", ") + std::to_string(rank.pid);
  const int first = options.node_rank * options.nproc;
  const std::string which = options.nnodes == 1
                                ? std::to_string(options.nproc) + " ranks"
                                : "ranks " + std::to_string(first) + "-" + std::to_string(first + options.nproc - 1) +
                                      " of " + std::to_string(options.nnodes * options.nproc) + " (node " +
                                      std::to_string(options.node_rank) + " of " + std::to_string(options.nnodes) + ")";
  std::fprintf(stderr, "kd launch: %s of %s (pids %s), rendezvous at %s:%d\n", which.c_str(), program.c_str(),
               pids.c_str(), options.master_addr.c_str(), port);

  std::optional<int> result;  // the first failure's exit code
  std::optional<Clock::time_point> kill_at;
  int signals_seen = 0;
  const auto stop_others = [&](int sig) {
    for (auto& rank : ranks) {
      if (rank.running) ::kill(rank.pid, sig);
    }
  };
  while (true) {
    forward_output(ranks);
    // Signals to the launcher: pass them on; a second one kills.
    if (g_signals > signals_seen) {
      signals_seen = g_signals;
      if (signals_seen == 1) {
        std::fprintf(stderr, "kd launch: stopping every rank (they save a checkpoint first); again to kill them\n");
        stop_others(SIGTERM);
        kill_at = Clock::now() + options.grace;
      } else {
        stop_others(SIGKILL);
      }
    }
    const Reaped reaped = reap(ranks);
    for (std::size_t r : reaped.failed) {
      const bool first_cause = !result && reaped.cause == r;
      std::fprintf(stderr, "kd launch: rank %zu %s%s\n", r, describe_exit(ranks[r]).c_str(),
                   first_cause ? "; stopping the other ranks" : "");
    }
    if (reaped.cause && !result) {
      result = ranks[*reaped.cause].exit_code;
      stop_others(SIGTERM);
      if (!kill_at) kill_at = Clock::now() + options.grace;
    }
    if (kill_at && Clock::now() >= *kill_at && reaped.any_running) {
      std::fprintf(stderr, "kd launch: ranks still running %.0f s after SIGTERM; killing them\n",
                   std::chrono::duration<double>(options.grace).count());
      stop_others(SIGKILL);
      kill_at.reset();
    }
    if (reaped.any_running) continue;
    drain_output(ranks);
    break;
  }
  return result.value_or(0);  // stopped by a signal, every rank saved and exited cleanly: 0
}

}  // namespace kd::cli
