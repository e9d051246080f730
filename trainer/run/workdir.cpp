#include "trainer/run/workdir_internal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "trainer/common/error.h"
#include "trainer/io/file_system.h"
#ifdef KD_WITH_REPORT
#include "trainer/report/report.h"
#endif
#include "trainer/run/progress_internal.h"

namespace kd::train {
namespace {

namespace fs = std::filesystem;

// Console lines carry no level (warnings and errors say so in words); log.txt lines do.
constexpr const char* kConsolePattern = "%Y-%m-%d %H:%M:%S %v";
constexpr const char* kFilePattern = "%Y-%m-%d %H:%M:%S [%l] %v";

// Passes each line, unformatted and with its level and time, to a caller's logger, whose own
// level, pattern and sinks then apply.
class ForwardingSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  explicit ForwardingSink(std::shared_ptr<spdlog::logger> to) : to_(std::move(to)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    to_->log(msg.time, msg.source, msg.level, msg.payload);
  }
  void flush_() override { to_->flush(); }

 private:
  std::shared_ptr<spdlog::logger> to_;
};

}  // namespace

RunLogger make_run_logger(std::shared_ptr<spdlog::logger> output) {
  std::shared_ptr<ProgressConsole> console;
  spdlog::sink_ptr first;
  // A caller's logger at debug gets kd's debug lines too; the workdir's files keep info and above.
  const auto level = output ? std::min(spdlog::level::info, output->level()) : spdlog::level::info;
  if (output) {
    first = std::make_shared<ForwardingSink>(std::move(output));
  } else {
    console = std::make_shared<ProgressConsole>(isatty(STDERR_FILENO) != 0);
    console->set_pattern(kConsolePattern);
    first = console;
  }
  // Lines logged before the workdir exists, written to its log.txt once it does: the run's
  // header and its warnings, a few dozen (spdlog allocates every slot up front, ~400 bytes each).
  auto early = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1'000);
  early->set_pattern(kFilePattern);
  early->set_level(spdlog::level::info);
  auto log = std::make_shared<spdlog::logger>("kd", spdlog::sinks_init_list{first, early});
  log->set_level(level);
  log->flush_on(spdlog::level::info);
  return {std::move(log), std::move(console)};
}

Workdir::Workdir(std::string path, writers::WriterOptions writers, std::shared_ptr<spdlog::logger> log, bool is_chief)
    : path_(std::move(path)), writer_options_(writers), log_(std::move(log)), is_chief_(is_chief) {}

std::vector<std::unique_ptr<writers::MetricWriter>> Workdir::make_writers() const {
  auto out = writers::make_writers(writer_options_, path_);
#ifdef KD_WITH_REPORT
  if (writer_options_.report) {  // last: it reads what the others wrote
    out.push_back(report::make_report_writer(path_, [log = log_](const std::string& why) { log->warn("{}", why); }));
  }
#endif
  return out;
}

Workdir::~Workdir() {
  if (writers_lock_fd_ >= 0) ::close(writers_lock_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void Workdir::lock() {
  if (lock_fd_ >= 0 || !fs::exists(path_)) return;
  const std::string lock_path = path_ + "/.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw IOError("cannot create \"" + lock_path + "\": " + std::strerror(errno));
  // A follower's training_running() holds the lock shared for a moment: wait that out.
  for (int attempt = 0; ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0; ++attempt) {
    if (attempt == 50) {
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw ConfigError("another kd process is using the workdir \"" + path_ +
                        "\"; wait for it to finish, or choose another workdir");
    }
    ::usleep(10'000);
  }
}

bool Workdir::training_running(const std::string& path) {
  const std::string lock_path = path + "/.lock";
  const int fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // no run ever opened the workdir
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0;
  ::close(fd);  // releases the look's own lock
  return held;
}

void Workdir::open_for_follow() {
  if (open_) return;
  const std::string lock_path = path_ + "/.eval.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw IOError("cannot create \"" + lock_path + "\": " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw ConfigError("another kd eval --follow is following the workdir \"" + path_ + "\"; stop it first");
  }
  open_ = true;
  auto& sinks = log_->sinks();
  if (dynamic_cast<spdlog::sinks::ringbuffer_sink_mt*>(sinks.back().get())) {
    std::ofstream log_file(path_ + "/log_eval.txt", std::ios::app);
    for (const auto& line : dynamic_cast<spdlog::sinks::ringbuffer_sink_mt&>(*sinks.back()).last_formatted()) {
      log_file << line;
    }
    sinks.pop_back();
  }
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path_ + "/log_eval.txt");
  file->set_pattern(kFilePattern);
  file->set_level(spdlog::level::info);
  sinks.push_back(file);
  log_->info("following the workdir: {}", path_);
}

void Workdir::begin_writes() {
  const std::string lock_path = path_ + "/.writers.lock";
  writers_lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (writers_lock_fd_ < 0) throw IOError("cannot create \"" + lock_path + "\": " + std::strerror(errno));
  ::flock(writers_lock_fd_, LOCK_EX);  // held by a training run only while it rewrites the records
  try {
    writers_ = make_writers();
  } catch (...) {
    end_writes();
    throw;
  }
}

void Workdir::end_writes() {
  for (auto& w : writers_) w->flush();
  writers_.clear();
  if (writers_lock_fd_ >= 0) ::close(writers_lock_fd_);
  writers_lock_fd_ = -1;
}

void Workdir::open(const std::string& experiment_yaml, const std::string& where, bool write_config) {
  if (open_) return;
  open_ = true;
  if (!is_chief_) return;  // rank 0 writes for the job
  std::error_code ec;
  fs::create_directories(path_, ec);
  if (ec) throw IOError(where + ": cannot create the workdir \"" + path_ + "\": " + ec.message());
  lock();
  const std::string config_path = path_ + "/config.yaml";
  if (write_config) {
    io::write_file_atomically(
        *io::posix_file_system(), config_path,
        "# The resolved experiment; run it again with: kd train --cfg=" + config_path + "\n" + experiment_yaml + "\n");
  }
  {
    std::ofstream log_file(path_ + "/log.txt", std::ios::app);
    auto& sinks = log_->sinks();
    auto* early = dynamic_cast<spdlog::sinks::ringbuffer_sink_mt*>(sinks.back().get());
    if (early) {
      for (const auto& line : early->last_formatted()) log_file << line;
      sinks.pop_back();
    }
  }
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path_ + "/log.txt");
  file->set_pattern(kFilePattern);
  file->set_level(spdlog::level::info);
  log_->sinks().push_back(file);
  writers_ = make_writers();
  // kd eval (no config to write) holds the workdir alone (lock()): a step it evaluates again
  // gets its records replaced, not repeated.
  if (!write_config) {
    for (auto& w : writers_) w->replace_existing(true);
  }
  if (start_over_) truncate_after(-1);  // the records of the run that starts over
  log_->info("workdir: {}", path_);
}

void Workdir::truncate_after(int64_t step) {
  if (writers_.empty()) return;
  // A follower (kd eval --follow) appends its records under the same lock.
  const std::string lock_path = path_ + "/.writers.lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) ::flock(fd, LOCK_EX);
  try {
    for (auto& w : writers_) w->truncate_after(step);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    throw;
  }
  if (fd >= 0) ::close(fd);
}

}  // namespace kd::train
