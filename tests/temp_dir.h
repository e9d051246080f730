// Fresh directories under the system's temporary directory, for a test's files (the test
// removes them). Test files say `using kd::testing::fresh_dir;` rather than define their own:
// the tests are compiled several files to a unit.
#pragma once

#include <filesystem>
#include <random>
#include <string>

namespace kd::testing {

// A directory that does not exist yet, named `prefix` and a random number.
inline std::filesystem::path fresh_dir(const std::string& prefix = "kd_test_") {
  std::random_device rd;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / (prefix + std::to_string(rd()));
  std::filesystem::remove_all(dir);
  return dir;
}

// The same, made (empty).
inline std::filesystem::path made_fresh_dir(const std::string& prefix = "kd_test_") {
  std::filesystem::path dir = fresh_dir(prefix);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace kd::testing
