// kd::io::FileSystem: the file operations kd's durable outputs need (checkpoints, logs,
// config.yaml, exports), behind a small interface so tests can inject faults (a full disk, a
// failed rename) and check that nothing written earlier is harmed; and the one way kd writes a
// file that must never be seen half-written:
//
//   io::write_file_atomically(*fs, workdir + "/config.yaml", yaml);   // replaces it
//   io::create_file_atomically(*fs, out, bytes);   // kd::IOError if `out` exists; never replaces
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kd::io {

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Creates or replaces `path` with `data` and fsyncs it. Throws kd::IOError.
  virtual void write_file(const std::string& path, std::string_view data) = 0;
  // The same for a file made of several buffers, written in order without joining them (a
  // checkpoint's tensors, from their own memory). By default joined and given to write_file.
  virtual void write_file_parts(const std::string& path, const std::vector<std::string_view>& parts);
  // The contents of a regular file (not a symbolic link, FIFO or device). Throws kd::IOError.
  virtual std::string read_file(const std::string& path) = 0;
  // The same, read into the memory `allocate(size)` returns for the file's size (a tensor's, say:
  // no copy through a string), which is left in the caller's hands. By default through read_file.
  virtual void read_file_into(const std::string& path, const std::function<char*(std::size_t)>& allocate);
  virtual void create_directories(const std::string& path) = 0;
  // Atomic rename (same file system); throws kd::IOError.
  virtual void rename(const std::string& from, const std::string& to) = 0;
  // Atomic rename that fails, with kd::IOError, when `to` exists (no check-then-rename race).
  virtual void rename_no_replace(const std::string& from, const std::string& to) = 0;
  // fsyncs a directory, so renames and new files in it survive a crash.
  virtual void sync_directory(const std::string& path) = 0;
  virtual void remove_all(const std::string& path) = 0;
  virtual bool exists(const std::string& path) = 0;
  // Names (not paths) of the entries of a directory; empty when it does not exist.
  virtual std::vector<std::string> list(const std::string& path) = 0;
};

// The POSIX file system; OS errors become kd::IOError naming the path and errno's text.
std::shared_ptr<FileSystem> posix_file_system();

// Replaces (or creates) `path` with `data` so that a reader, or the file after a crash, holds
// either the old contents or the new ones: written to a temporary beside it and fsync'ed,
// renamed over `path`, then the directory fsync'ed. The temporary is removed on failure.
void write_file_atomically(FileSystem& fs, const std::string& path, std::string_view data);
// The same for a file that must not exist yet: kd::IOError when `path` exists, which is left
// as it was (the check and the creation are one rename).
void create_file_atomically(FileSystem& fs, const std::string& path, std::string_view data);

}  // namespace kd::io
