// A fresh, not yet existing directory under the system's temporary directory, for a test's
// files (the test removes it).
#pragma once

#include <filesystem>
#include <random>
#include <string>

namespace kd::testing {

inline std::filesystem::path fresh_dir(const std::string& prefix) {
  std::random_device rd;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / (prefix + std::to_string(rd()));
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace kd::testing
