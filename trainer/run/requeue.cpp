// Trainer::requeue: after requeue_signal (SLURM's warning before a time limit) stopped the run
// and its checkpoint is saved, rank 0 requeues the SLURM job.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "trainer/run/trainer.h"
#include "trainer/run/trainer_options.h"

namespace kd::train {

namespace {

// The path of `program` on PATH ("" when none is executable).
std::string on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

}  // namespace

void Trainer::requeue() {
  const char* job = std::getenv("SLURM_JOB_ID");
  const std::string scontrol = on_path("scontrol");
  const std::string stopped = "stopped by the time-limit signal " + std::string(strsignal(options_->requeue_signal)) +
                              " at step " + std::to_string(state_.step) + "; checkpoint saved";
  if (job == nullptr || *job == '\0' || scontrol.empty()) {
    exit_code_ = kExitNotRequeued;
    log_->info("{}. Not requeued ({}): exit code {}; run the same command again to resume.", stopped,
               job == nullptr || *job == '\0' ? "no SLURM_JOB_ID" : "no scontrol on PATH", kExitNotRequeued);
    return;
  }
  if (!is_chief()) {  // rank 0 requeues the job
    log_->info("{}; rank 0 requeues SLURM job {}.", stopped, job);
    return;
  }
  std::vector<std::string> args{scontrol, "requeue", job};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int status = -1;
  if (posix_spawn(&pid, scontrol.c_str(), nullptr, nullptr, argv.data(), environ) == 0) waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    log_->info("{}; requeued SLURM job {} (scontrol requeue): it resumes from this checkpoint.", stopped, job);
  } else {
    exit_code_ = kExitNotRequeued;
    log_->warn("{}; `{} requeue {}` failed (status {}): exit code {}; run the same command again to resume.", stopped,
               scontrol, job, status, kExitNotRequeued);
  }
}

}  // namespace kd::train
