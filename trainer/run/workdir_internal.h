// kd::train::Workdir: a run's workdir as rank 0 keeps it: an exclusive lock (WORKDIR/.lock, so
// that two processes never train into one workdir), config.yaml, log.txt (with the lines logged
// before the workdir existed) and the metric writers. Ranks other than 0 write nothing.
//
//   Workdir workdir(options.workdir, options.writer, log, parallel.is_chief());
//   workdir.open(experiment.to_yaml());   // after the first step worked; idempotent
//   for (auto& w : workdir.writers()) w->write_scalars(step, "train", values);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "trainer/writers/writer.h"

namespace spdlog {
class logger;
}

namespace kd::train {

class Workdir {
 public:
  // `log` is the run's logger: its last sink holds the lines logged before the workdir is open
  // (a ring buffer, see make_run_logger), which open() writes to log.txt.
  Workdir(std::string path, writers::WriterOptions writers, std::shared_ptr<spdlog::logger> log, bool is_chief);
  ~Workdir();
  Workdir(const Workdir&) = delete;
  Workdir& operator=(const Workdir&) = delete;

  const std::string& path() const { return path_; }
  bool is_open() const { return open_; }

  // Takes the exclusive lock when the directory exists (kd::ConfigError when another process
  // holds it); idempotent.
  void lock();
  // Whether a training process holds the lock of the workdir at `path` (a look that takes
  // nothing a starting run needs: lock() waits out such a look).
  static bool training_running(const std::string& path);
  // Creates the directory (kd::IOError naming `where` on failure), locks it, writes config.yaml
  // (unless !write_config, e.g. kd eval), log.txt and makes the writers. Only the first call
  // does anything, and only on rank 0. Without write_config (kd eval), the writers replace the
  // records of a step evaluated before instead of repeating them (replace_existing).
  void open(const std::string& experiment_yaml, const std::string& where, bool write_config = true);
  // For `kd eval --follow`, beside a training process: takes WORKDIR/.eval.lock (one follower
  // per workdir; kd::ConfigError when another holds it) instead of the training lock, and logs
  // to WORKDIR/log_eval.txt. The writers exist only between begin_writes() and end_writes(),
  // made afresh each time, so that a training run's rewrite of the records (when it resumes)
  // never loses the follower's: both take WORKDIR/.writers.lock for it.
  void open_for_follow();
  void begin_writes();
  void end_writes();
  // The records of the run in this workdir are rewritten (it starts over): set before open().
  void start_over() { start_over_ = true; }
  // Drops what the writers hold after `step` (a resumed run logs those steps again).
  void truncate_after(int64_t step);

  // Empty until open() (and on ranks other than 0).
  std::vector<std::unique_ptr<writers::MetricWriter>>& writers() { return writers_; }

 private:
  // The writers of writer_options_, WORKDIR/report.html's last.
  std::vector<std::unique_ptr<writers::MetricWriter>> make_writers() const;

  std::string path_;
  writers::WriterOptions writer_options_;
  std::shared_ptr<spdlog::logger> log_;
  bool is_chief_;
  bool open_ = false;
  bool start_over_ = false;
  int lock_fd_ = -1;
  int writers_lock_fd_ = -1;  // WORKDIR/.writers.lock, held while records are rewritten or followed
  std::vector<std::unique_ptr<writers::MetricWriter>> writers_;
};

// The run's logger: a console sink `console` (stderr, with a progress bar on a terminal) and a
// ring buffer of the lines before the workdir exists; every line of info or above is flushed at
// once, so a killed run keeps its whole log. Given `output` (a caller's logger), the lines go to
// it instead of stderr, each with its level, and `console` is null (no progress bar).
class ProgressConsole;
struct RunLogger {
  std::shared_ptr<spdlog::logger> log;
  std::shared_ptr<ProgressConsole> console;
};
RunLogger make_run_logger(std::shared_ptr<spdlog::logger> output = nullptr);

}  // namespace kd::train
