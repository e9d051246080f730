#include "trainer/checkpoints/file_system.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "trainer/common/error.h"

namespace kd::checkpoints {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& what, const std::string& path, int err) {
  throw IOError(what + " \"" + path + "\" failed: " + std::strerror(err));
}

class PosixFileSystem : public FileSystem {
 public:
  void write_file(const std::string& path, std::string_view data) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("creating", path, errno);
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        fail("writing", path, err);
      }
      done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) {
      const int err = errno;
      ::close(fd);
      fail("syncing", path, err);
    }
    if (::close(fd) != 0) fail("closing", path, errno);
  }

  std::string read_file(const std::string& path) override {
    // Regular files only, and not through a symbolic link: a FIFO or a device would block or
    // never end, and a link could make a crafted checkpoint read files outside its directory.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) fail("reading", path, errno == ELOOP ? EINVAL : errno);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw IOError("reading \"" + path + "\" failed: not a regular file");
    std::string out;
    try {
      if (st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
      char buffer[1 << 16];
      while (true) {
        const ssize_t n = ::read(fd, buffer, sizeof(buffer));
        if (n < 0) {
          if (errno == EINTR) continue;
          fail("reading", path, errno);
        }
        if (n == 0) break;
        out.append(buffer, static_cast<std::size_t>(n));
      }
    } catch (const std::bad_alloc&) {
      throw IOError("reading \"" + path + "\" failed: its " + std::to_string(st.st_size) + " bytes do not fit in memory");
    }
    return out;
  }

  void create_directories(const std::string& path) override {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw IOError("creating the directory \"" + path + "\" failed: " + ec.message());
  }

  void rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) fail("renaming to \"" + to + "\" from", from, errno);
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

std::shared_ptr<FileSystem> posix_file_system() {
  static auto fs = std::make_shared<PosixFileSystem>();
  return fs;
}

}  // namespace kd::checkpoints
