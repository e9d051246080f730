// The file operations checkpoints need, behind a small interface so tests can inject faults
// (a full disk, a failed rename) and check that no earlier checkpoint is harmed.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kd::checkpoints {

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Creates or replaces `path` with `data` and fsyncs it. Throws kd::IOError.
  virtual void write_file(const std::string& path, std::string_view data) = 0;
  // The contents of a regular file (not a symbolic link, FIFO or device). Throws kd::IOError.
  virtual std::string read_file(const std::string& path) = 0;
  virtual void create_directories(const std::string& path) = 0;
  // Atomic rename (same file system); throws kd::IOError.
  virtual void rename(const std::string& from, const std::string& to) = 0;
  // fsyncs a directory, so renames and new files in it survive a crash.
  virtual void sync_directory(const std::string& path) = 0;
  virtual void remove_all(const std::string& path) = 0;
  virtual bool exists(const std::string& path) = 0;
  // Names (not paths) of the entries of a directory; empty when it does not exist.
  virtual std::vector<std::string> list(const std::string& path) = 0;
};

// The POSIX file system; OS errors become kd::IOError naming the path and errno's text.
std::shared_ptr<FileSystem> posix_file_system();

}  // namespace kd::checkpoints
