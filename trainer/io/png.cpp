#include "trainer/io/png.h"

#include <png.h>

#include <csetjmp>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/tensor_text.h"

namespace kd::io {
namespace {

void write_to_string(png_structp png, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}

struct Reader {
  const std::string* bytes;
  std::size_t at;
};

void read_from_string(png_structp png, png_bytep data, png_size_t n) {
  auto* r = static_cast<Reader*>(png_get_io_ptr(png));
  if (r->at + n > r->bytes->size()) png_error(png, "truncated PNG");
  std::memcpy(data, r->bytes->data() + r->at, n);
  r->at += n;
}

// libpng reports errors by longjmp to the setjmp in the caller (C++ exceptions must not cross
// its C frames); the message is kept here to be thrown after the jump.
void on_error(png_structp png, png_const_charp message) {
  auto* where = static_cast<std::string*>(png_get_error_ptr(png));
  *where = message;
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

constexpr int64_t kMaxPngPixels = int64_t{1} << 28;  // a crafted header must not make a huge tensor

}  // namespace

std::string encode_png(const torch::Tensor& image) {
  if (image.dim() != 3 || image.scalar_type() != torch::kByte ||
      (image.size(2) != 1 && image.size(2) != 3 && image.size(2) != 4)) {
    throw TypeError("a PNG image must be uint8 [H, W, C] with C in {1, 3, 4}, got " + describe_tensor(image));
  }
  const torch::Tensor img = image.contiguous().cpu();
  const int h = static_cast<int>(img.size(0)), w = static_cast<int>(img.size(1)), c = static_cast<int>(img.size(2));
  std::string out, error;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
  png_infop info = png_create_info_struct(png);
  const auto* data = img.data_ptr<uint8_t>();
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw IOError("PNG encoding failed: " + error);
  }
  {
    png_set_write_fn(png, &out, write_to_string, nullptr);
    const int color = c == 1 ? PNG_COLOR_TYPE_GRAY : c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
    png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 8, color, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; ++y)
      png_write_row(png, const_cast<png_bytep>(data + static_cast<std::ptrdiff_t>(y) * w * c));
    png_write_end(png, nullptr);
  }
  png_destroy_write_struct(&png, &info);
  return out;
}

torch::Tensor decode_png(const std::string& bytes, const std::string& where) {
  if (bytes.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) != 0) {
    throw CorruptionError(where + ": not a PNG image");
  }
  std::string error;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
  if (!png) throw CorruptionError(where + ": cannot start the PNG decoder");
  png_infop info = png_create_info_struct(png);
  Reader reader{&bytes, 0};
  // Set before setjmp and not changed after it (only what it points to): defined after a longjmp.
  const auto out = std::make_unique<torch::Tensor>();
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw CorruptionError(where + ": not a readable PNG image (" + error + ")");
  }
  png_set_read_fn(png, &reader, read_from_string);
  png_read_info(png, info);
  const auto w = static_cast<int64_t>(png_get_image_width(png, info));
  const auto h = static_cast<int64_t>(png_get_image_height(png, info));
  if (h <= 0 || w <= 0 || h * w > kMaxPngPixels) {
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

}  // namespace kd::io
