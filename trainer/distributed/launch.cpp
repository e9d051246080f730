#include "trainer/distributed/launch.h"

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

namespace kd::distributed {
namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_signals = 0;
extern "C" void on_launcher_signal(int) { g_signals = g_signals + 1; }

}  // namespace

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw IOError(std::string("cannot create a socket to find a free port: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw IOError(std::string("cannot find a free port: ") + std::strerror(errno) + "; pass --master_port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

namespace {

std::string self_executable() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) throw IOError("cannot find the kd executable (/proc/self/exe); pass its path");
  return std::string(buf, static_cast<std::size_t>(n));
}

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

int launch(const LaunchOptions& options) {
  if (options.nproc < 1) throw ConfigError("--nproc must be >= 1, got " + std::to_string(options.nproc));
  if (options.args.empty())
    throw ConfigError("kd launch needs the kd command to run, e.g. kd launch --nproc=2 -- train --cfg=FILE");
  const std::string program = options.program.empty() ? self_executable() : options.program;
  const int port = options.master_port > 0 ? options.master_port : free_port();

  Job job;
  std::vector<Rank>& ranks = job.ranks;
  ranks.resize(static_cast<std::size_t>(options.nproc));
  const pid_t launcher_pid = ::getpid();
  for (int r = 0; r < options.nproc; ++r) {
    auto& rank = ranks[static_cast<std::size_t>(r)];
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
    if (pid != 0) ::sigprocmask(SIG_SETMASK, &before, nullptr);
    if (pid < 0) {
      ::close(out_pipe[1]);
      ::close(err_pipe[1]);
      throw IOError(std::string("cannot start rank ") + std::to_string(r) + ": " + std::strerror(errno));
    }
    if (pid == 0) {
      // Its own process group: a Ctrl-C on the terminal reaches the launcher alone, which
      // passes one SIGTERM on (so every rank saves once); and it stops if the launcher dies.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher_pid) ::_exit(128 + SIGTERM);
      ::dup2(out_pipe[1], STDOUT_FILENO);
      ::dup2(err_pipe[1], STDERR_FILENO);
      const int null = ::open("/dev/null", O_RDONLY);  // a background group must not read the terminal
      if (null >= 0) {
        ::dup2(null, STDIN_FILENO);
        if (null != STDIN_FILENO) ::close(null);
      }
      for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) ::signal(sig, SIG_DFL);
      // If the launcher dies, its rank still saves on the SIGTERM it gets: writing to the pipe
      // nobody reads then fails instead of killing it.
      ::signal(SIGPIPE, SIG_IGN);
      ::sigprocmask(SIG_SETMASK, &before, nullptr);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(options.nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(options.nproc).c_str(), 1);
      ::setenv("GROUP_RANK", "0", 1);
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
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    rank.pid = pid;
  }
  std::string pids;
  for (const auto& rank : ranks) pids += (pids.empty() ? "" : ", ") + std::to_string(rank.pid);
  std::fprintf(stderr, "kd launch: %d ranks of %s (pids %s), rendezvous at %s:%d\n", options.nproc, program.c_str(),
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
    // Forward output.
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
    if (!fds.empty()) {
      const int n = ::poll(fds.data(), fds.size(), 100);
      if (n > 0) {
        for (std::size_t i = 0; i < fds.size(); ++i) {
          if (fds[i].revents == 0) continue;
          auto& rank = ranks[owners[i].first];
          Stream& s = rank.streams[owners[i].second];
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
    } else {
      ::usleep(50'000);
    }

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

    // Reap ranks. When several fail between two looks, a rank killed by a signal is taken as
    // the cause (the others most likely failed because it went away).
    bool any_running = false;
    std::optional<std::size_t> cause;
    std::vector<std::size_t> failed;
    for (std::size_t r = 0; r < ranks.size(); ++r) {
      auto& rank = ranks[r];
      if (!rank.running) continue;
      int status = 0;
      const pid_t done = ::waitpid(rank.pid, &status, WNOHANG);
      if (done == 0 || (done < 0 && errno == EINTR)) {
        any_running = true;
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
      failed.push_back(r);
      if (!cause || (rank.signaled && !ranks[*cause].signaled)) cause = r;
    }
    if (cause && !result) {
      result = ranks[*cause].exit_code;
      for (std::size_t r : failed) {
        std::fprintf(stderr, "kd launch: rank %zu %s%s\n", r, describe_exit(ranks[r]).c_str(),
                     r == *cause ? "; stopping the other ranks" : "");
      }
      stop_others(SIGTERM);
      if (!kill_at) kill_at = Clock::now() + options.grace;
    } else {
      for (std::size_t r : failed) std::fprintf(stderr, "kd launch: rank %zu %s\n", r, describe_exit(ranks[r]).c_str());
    }
    if (kill_at && Clock::now() >= *kill_at && any_running) {
      std::fprintf(stderr, "kd launch: ranks still running %.0f s after SIGTERM; killing them\n",
                   std::chrono::duration<double>(options.grace).count());
      stop_others(SIGKILL);
      kill_at.reset();
    }
    bool open_streams = false;
    for (const auto& rank : ranks) open_streams = open_streams || rank.streams[0].fd >= 0 || rank.streams[1].fd >= 0;
    if (!any_running && !open_streams) break;
    if (!any_running && open_streams) {
      // A rank's children may hold its pipes; drain what is there and stop.
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
      break;
    }
  }
  return result.value_or(0);  // stopped by a signal, every rank saved and exited cleanly: 0
}

}  // namespace kd::distributed
