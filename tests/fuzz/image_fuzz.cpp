// Fuzzes the image decoders of ImageFolder (PNG with libpng, JPEG with libjpeg-turbo): the input
// is the file. Any kd::Error is a correct answer.
#include <cstdint>
#include <string>

#include "trainer/common/error.h"
#include "trainer/data/image_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)kd::data::decode_image(std::string(reinterpret_cast<const char*>(data), size), "fuzz input");
  } catch (const kd::Error&) {
  }
  return 0;
}
