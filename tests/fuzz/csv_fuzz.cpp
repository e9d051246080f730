// Fuzzes the CSV source: the input is the file; the first byte chooses whether a label column
// "y" is asked for. Any kd::Error is a correct answer.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("kd_csv_fuzz_" + std::to_string(getpid()) + ".csv")).string();
  if (size == 0) return 0;
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data + 1), static_cast<std::streamsize>(size - 1));
  const std::string yaml = "{type: Csv, path: \"" + path + "\"" + (data[0] & 1 ? ", label_column: y" : "") +
                           (data[0] & 2 ? ", header: false" : "") + "}";
  try {
    const kd::Tree t = kd::data::source_registry().create(kd::config::Node::parse(yaml))->load();
    (void)kd::data::num_examples(t, path);
  } catch (const kd::Error&) {
  }
  return 0;
}
