// Fuzzes the .npy reader (NumPy's np.save format) through the Npy source: the input is the file;
// its header is read and checked, then its first and last examples are read. Any kd::Error is a
// correct answer.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("kd_npy_fuzz_" + std::to_string(getpid()));
  static const kd::config::Node options = [] {
    std::filesystem::create_directories(dir);
    return kd::config::Node::parse("{type: Npy, path: " + dir.string() + ", fields: {x: x.npy}}");
  }();
  std::ofstream(dir / "x.npy", std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    const auto source = kd::data::source_registry().create(options);
    const int64_t n = source->size();
    if (n > 0) {
      (void)source->get(0);
      (void)source->get(n - 1);
    }
  } catch (const kd::Error&) {
  }
  return 0;
}
