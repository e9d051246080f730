#include "trainer/data/image_files.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include <jpeglib.h>
#include <png.h>

#include "trainer/common/error.h"

namespace kd::data {
namespace {

constexpr int64_t kMaxPixels = int64_t{1} << 28;

// ---- PNG ----

struct PngInput {
  const std::string* bytes;
  std::size_t at;
};

void png_read(png_structp png, png_bytep out, png_size_t n) {
  auto* in = static_cast<PngInput*>(png_get_io_ptr(png));
  if (in->at + n > in->bytes->size()) png_error(png, "the file ends early");
  std::memcpy(out, in->bytes->data() + in->at, n);
  in->at += n;
}

void png_fail(png_structp png, png_const_charp message) {
  *static_cast<std::string*>(png_get_error_ptr(png)) = message;
  png_longjmp(png, 1);
}

void png_ignore(png_structp, png_const_charp) {}

torch::Tensor decode_png_file(const std::string& bytes, const std::string& where) {
  std::string error;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, png_fail, png_ignore);
  if (!png) throw CorruptionError(where + ": cannot start the PNG decoder");
  png_infop info = png_create_info_struct(png);
  PngInput input{&bytes, 0};
  // Set before setjmp and not changed after it (only what it points to): defined after a longjmp.
  const auto out = std::make_unique<torch::Tensor>();
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw CorruptionError(where + ": not a readable PNG image (" + error + ")");
  }
  png_set_read_fn(png, &input, png_read);
  png_read_info(png, info);
  const auto w = static_cast<int64_t>(png_get_image_width(png, info));
  const auto h = static_cast<int64_t>(png_get_image_height(png, info));
  if (h <= 0 || w <= 0 || h * w > kMaxPixels) {
    error = "an image of " + std::to_string(w) + " x " + std::to_string(h) + " pixels; at most 2^28 are read";
    png_longjmp(png, 1);
  }
  // Everything to 8 bits per channel, gray or RGB, with alpha where the file has it.
  const int color = png_get_color_type(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int c = png_get_channels(png, info);
  *out = torch::empty({h, w, c}, torch::kByte);
  auto* data = out->data_ptr<uint8_t>();
  for (int pass = 0; pass < passes; ++pass) {
    for (int64_t y = 0; y < h; ++y) png_read_row(png, data + y * w * c, nullptr);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return *out;
}

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
  if (bytes.size() >= 8 && png_sig_cmp(b, 0, 8) == 0) return decode_png_file(bytes, where);
  if (bytes.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return decode_jpeg_file(bytes, where);
  throw CorruptionError(where + ": neither a PNG nor a JPEG image (by its first bytes)");
}

}  // namespace kd::data
