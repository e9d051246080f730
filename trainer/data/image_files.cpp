#include "trainer/data/image_files.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include <jpeglib.h>
#include <png.h>

#include "trainer/common/error.h"
#include "trainer/io/png.h"

namespace kd::data {
namespace {

constexpr int64_t kMaxPixels = int64_t{1} << 28;

// ---- JPEG ----

struct JpegError {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_quiet(j_common_ptr, int) {}

torch::Tensor decode_jpeg_file(const std::string& bytes, const std::string& where) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.base);
  err.base.error_exit = jpeg_fail;
  err.base.emit_message = jpeg_quiet;
  const auto out = std::make_unique<torch::Tensor>();  // as in the PNG decoder
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw CorruptionError(where + ": not a readable JPEG image (" + std::string(err.message) + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;  // CMYK, YCbCr: RGB
  const auto w = static_cast<int64_t>(cinfo.image_width), h = static_cast<int64_t>(cinfo.image_height);
  if (h <= 0 || w <= 0 || h * w > kMaxPixels) {
    std::snprintf(err.message, sizeof(err.message), "an image of %lld x %lld pixels; at most 2^28 are read",
                  static_cast<long long>(w), static_cast<long long>(h));
    std::longjmp(err.jump, 1);
  }
  jpeg_start_decompress(&cinfo);
  const int c = cinfo.output_components;
  *out = torch::empty({h, w, c}, torch::kByte);
  auto* data = out->data_ptr<uint8_t>();
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = data + static_cast<int64_t>(cinfo.output_scanline) * w * c;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return *out;
}

}  // namespace

torch::Tensor decode_image(const std::string& bytes, const std::string& where) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() >= 8 && png_sig_cmp(b, 0, 8) == 0) return io::decode_png(bytes, where);
  if (bytes.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return decode_jpeg_file(bytes, where);
  throw CorruptionError(where + ": neither a PNG nor a JPEG image (by its first bytes)");
}

}  // namespace kd::data
