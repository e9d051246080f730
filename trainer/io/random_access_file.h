// kd::io::RandomAccessFile: a file read at any offset by any number of threads at once (pread:
// no shared position), one system call per read. For data read an example at a time: an
// example costs one read of its own bytes (from the kernel's page cache when it holds them),
// nothing is mapped or kept, so the data may be larger than memory.
//
//   auto file = kd::io::RandomAccessFile::open("x.npy");  // kd::IOError naming the file
//   file->read(offset, n, buffer);                         // kd::IOError on a short read
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kd::io {

class RandomAccessFile {
 public:
  static std::shared_ptr<const RandomAccessFile> open(const std::string& path);
  ~RandomAccessFile();
  RandomAccessFile(const RandomAccessFile&) = delete;
  RandomAccessFile& operator=(const RandomAccessFile&) = delete;

  const std::string& path() const { return path_; }
  std::size_t size() const { return size_; }
  // Bytes [offset, offset + n) into `out`; kd::IOError naming the file when they are not there.
  void read(std::size_t offset, std::size_t n, void* out) const;
  std::string read(std::size_t offset, std::size_t n) const;

 private:
  RandomAccessFile(std::string path, int fd, std::size_t size);
  std::string path_;
  int fd_;
  std::size_t size_;
};

}  // namespace kd::io
