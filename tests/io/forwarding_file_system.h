// A kd::io::FileSystem that does what the POSIX one does; a test derives from it and overrides
// the operations it makes fail (a full disk, a failed rename).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trainer/io/file_system.h"

namespace kd::testing {

class ForwardingFileSystem : public kd::io::FileSystem {
 public:
  void write_file(const std::string& path, std::string_view data) override { base_->write_file(path, data); }
  std::string read_file(const std::string& p) override { return base_->read_file(p); }
  void create_directories(const std::string& p) override { base_->create_directories(p); }
  void rename(const std::string& a, const std::string& b) override { base_->rename(a, b); }
  void rename_no_replace(const std::string& a, const std::string& b) override { base_->rename_no_replace(a, b); }
  void sync_directory(const std::string& p) override { base_->sync_directory(p); }
  void remove_all(const std::string& p) override { base_->remove_all(p); }
  bool exists(const std::string& p) override { return base_->exists(p); }
  std::vector<std::string> list(const std::string& p) override { return base_->list(p); }

 protected:
  std::shared_ptr<kd::io::FileSystem> base_ = kd::io::posix_file_system();
};

}  // namespace kd::testing
