// Fuzzes the .npy reader (NumPy's np.save format): the input is the file; its header is read and
// checked, then its first and last examples are read. Any kd::Error is a correct answer.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "trainer/common/error.h"
#include "trainer/data/array_files_internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("kd_npy_fuzz_" + std::to_string(getpid()))).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    const kd::data::NpyArray array = kd::data::read_npy_header(kd::io::RandomAccessFile::open(path));
    if (array.shape[0] > 0) {
      (void)kd::data::npy_example(array, 0);
      (void)kd::data::npy_example(array, array.shape[0] - 1);
    }
  } catch (const kd::Error&) {
  }
  return 0;
}
