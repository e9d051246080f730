#include "trainer/io/random_access_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "trainer/common/error.h"

namespace kd::io {

std::shared_ptr<const RandomAccessFile> RandomAccessFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IOError("cannot open \"" + path + "\": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IOError("\"" + path + "\" is not a regular file");
  }
  return std::shared_ptr<const RandomAccessFile>(new RandomAccessFile(path, fd, static_cast<std::size_t>(st.st_size)));
}

RandomAccessFile::RandomAccessFile(std::string path, int fd, std::size_t size)
    : path_(std::move(path)), fd_(fd), size_(size) {}

RandomAccessFile::~RandomAccessFile() { ::close(fd_); }

void RandomAccessFile::read(std::size_t offset, std::size_t n, void* out) const {
  auto* to = static_cast<char*>(out);
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd_, to + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      throw IOError("cannot read bytes " + std::to_string(offset) + " to " + std::to_string(offset + n) + " of \"" +
                    path_ + "\" (" +
                    (got == 0 ? std::string("it ends at ") + std::to_string(offset + done) + ")"
                              : std::string(std::strerror(errno)) + ")"));
    }
    done += static_cast<std::size_t>(got);
  }
}

std::string RandomAccessFile::read(std::size_t offset, std::size_t n) const {
  std::string out(n, '\0');
  read(offset, n, out.data());
  return out;
}

}  // namespace kd::io
