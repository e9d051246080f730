// Fuzzes the IDX reader (MNIST's format): the input is the file, plain or gzipped. Any
// kd::Error is a correct answer.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "trainer/common/error.h"
#include "trainer/data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("kd_idx_fuzz_" + std::to_string(getpid()))).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    (void)kd::data::read_idx(path);
  } catch (const kd::Error&) {
  }
  return 0;
}
