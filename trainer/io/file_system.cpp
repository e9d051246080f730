#include "trainer/io/file_system.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "trainer/common/error.h"

namespace kd::io {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& what, const std::string& path, int err) {
  throw IOError(what + " \"" + path + "\" failed: " + std::strerror(err));
}

// Opens a regular file for reading: not through a symbolic link, and not a FIFO or a device,
// which would block or never end (a link could make a crafted checkpoint read files outside its
// directory).
int open_regular(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) fail("reading", path, errno == ELOOP ? EINVAL : errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IOError("reading \"" + path + "\" failed: not a regular file");
  }
  return fd;
}

std::size_t file_size(int fd) {
  struct stat st {};
  ::fstat(fd, &st);
  return static_cast<std::size_t>(st.st_size);
}

// Reads until `size` bytes or the end of the file; the number read.
std::size_t read_up_to(int fd, char* data, std::size_t size, const std::string& path) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("reading", path, errno);
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

class PosixFileSystem : public FileSystem {
 public:
  void write_file(const std::string& path, std::string_view data) override { write_file_parts(path, {data}); }

  void write_file_parts(const std::string& path, const std::vector<std::string_view>& parts) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("creating", path, errno);
    struct Closer {
      int fd;
      ~Closer() {
        if (fd >= 0) ::close(fd);
      }
    } closer{fd};
    // writev, IOV_MAX buffers at a time, resumed after a short write.
    std::vector<iovec> pending;
    for (const auto& part : parts) {
      if (!part.empty()) pending.push_back({const_cast<char*>(part.data()), part.size()});
    }
    std::size_t first = 0;
    while (first < pending.size()) {
      const int count = static_cast<int>(std::min<std::size_t>(pending.size() - first, IOV_MAX));
      const ssize_t n = ::writev(fd, pending.data() + first, count);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("writing", path, errno);
      }
      auto done = static_cast<std::size_t>(n);
      while (first < pending.size() && done >= pending[first].iov_len) done -= pending[first++].iov_len;
      if (done > 0) {
        pending[first].iov_base = static_cast<char*>(pending[first].iov_base) + done;
        pending[first].iov_len -= done;
      }
    }
    if (::fsync(fd) != 0) fail("syncing", path, errno);
    closer.fd = -1;
    if (::close(fd) != 0) fail("closing", path, errno);
  }

  std::string read_file(const std::string& path) override {
    const int fd = open_regular(path);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    std::string out;
    try {
      const std::size_t size = file_size(fd);
      out.resize(size);
      const std::size_t done = read_up_to(fd, out.data(), size, path);
      out.resize(done);
      if (done == size) {  // it may have grown since: read on to its end
        char buffer[1 << 16];
        while (std::size_t n = read_up_to(fd, buffer, sizeof buffer, path)) out.append(buffer, n);
      }
    } catch (const std::bad_alloc&) {
      throw IOError("reading \"" + path + "\" failed: it does not fit in memory");
    }
    return out;
  }

  void read_file_into(const std::string& path, const std::function<char*(std::size_t)>& allocate) override {
    const int fd = open_regular(path);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    const std::size_t size = file_size(fd);
    char* data = nullptr;
    try {
      data = allocate(size);
    } catch (const std::bad_alloc&) {
      throw IOError("reading \"" + path + "\" failed: its " + std::to_string(size) + " bytes do not fit in memory");
    }
    char extra = 0;
    if (read_up_to(fd, data, size, path) != size || read_up_to(fd, &extra, 1, path) != 0) {
      throw IOError("reading \"" + path + "\" failed: it changed size while being read (" + std::to_string(size) +
                    " bytes when opened)");
    }
  }

  void create_directories(const std::string& path) override {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw IOError("creating the directory \"" + path + "\" failed: " + ec.message());
  }

  void rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) fail("renaming to \"" + to + "\" from", from, errno);
  }

  void rename_no_replace(const std::string& from, const std::string& to) override {
    // renameat2(RENAME_NOREPLACE) where the file system has it; a hard link, which fails on
    // an existing name just as atomically, where it does not; on a file system with neither
    // (FAT, some FUSE mounts), a check and a rename, which only a concurrent creator can race.
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return;
    if (errno != EINVAL && errno != ENOSYS) fail("renaming to \"" + to + "\" from", from, errno);
    if (::link(from.c_str(), to.c_str()) == 0) {
      ::unlink(from.c_str());
      return;
    }
    if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS) fail("creating \"" + to + "\" from", from, errno);
    struct stat st {};
    if (::lstat(to.c_str(), &st) == 0) fail("creating", to, EEXIST);
    rename(from, to);
  }

  void sync_directory(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) fail("opening the directory", path, errno);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) fail("syncing the directory", path, err);
  }

  void remove_all(const std::string& path) override {
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec) throw IOError("removing \"" + path + "\" failed: " + ec.message());
  }

  bool exists(const std::string& path) override { return fs::exists(path); }

  std::vector<std::string> list(const std::string& path) override {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(path, ec)) out.push_back(entry.path().filename().string());
    return out;
  }
};

}  // namespace

void FileSystem::write_file_parts(const std::string& path, const std::vector<std::string_view>& parts) {
  std::string joined;
  for (const auto& part : parts) joined += part;
  write_file(path, joined);
}

void FileSystem::read_file_into(const std::string& path, const std::function<char*(std::size_t)>& allocate) {
  const std::string data = read_file(path);
  if (!data.empty())
    std::memcpy(allocate(data.size()), data.data(), data.size());
  else
    allocate(0);
}

std::shared_ptr<FileSystem> posix_file_system() {
  static auto fs = std::make_shared<PosixFileSystem>();
  return fs;
}

namespace {

std::atomic<uint64_t> g_temporaries{0};

// Writes `data` to a temporary beside `path` and publishes it with `publish(tmp, path)`.
template <typename Publish>
void write_then_publish(FileSystem& fs, const std::string& path, std::string_view data, Publish&& publish) {
  // The process id and a count keep two processes, or two threads, writing one file apart.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(g_temporaries++);
  try {
    fs.write_file(tmp, data);
    publish(tmp, path);
  } catch (...) {
    try {
      fs.remove_all(tmp);
    } catch (const std::exception&) {
      // Best effort: the error that matters is the one propagating.
    }
    throw;
  }
  const fs::path parent = fs::path(path).parent_path();
  fs.sync_directory(parent.empty() ? "." : parent.string());
}

}  // namespace

void write_file_atomically(FileSystem& fs, const std::string& path, std::string_view data) {
  write_then_publish(fs, path, data, [&](const std::string& tmp, const std::string& to) { fs.rename(tmp, to); });
}

void create_file_atomically(FileSystem& fs, const std::string& path, std::string_view data) {
  write_then_publish(fs, path, data,
                     [&](const std::string& tmp, const std::string& to) { fs.rename_no_replace(tmp, to); });
}

}  // namespace kd::io
