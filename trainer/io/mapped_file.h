// kd::io::MappedFile: a file mapped read-only into memory. Its pages are the kernel's: read when
// touched, evicted under memory pressure, so data larger than memory can be read by index.
//
//   auto file = kd::io::MappedFile::open("x.npy");  // kd::IOError naming the file
//   std::memcpy(out, file->bytes().data() + offset, n);
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace kd::io {

class MappedFile {
 public:
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  std::size_t size() const { return size_; }
  std::string_view bytes() const { return {static_cast<const char*>(data_), size_}; }

 private:
  MappedFile(std::string path, const void* data, std::size_t size);
  std::string path_;
  const void* data_;
  std::size_t size_;
};

}  // namespace kd::io
