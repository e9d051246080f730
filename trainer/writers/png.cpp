#include "trainer/writers/png.h"

#include <png.h>

#include <csetjmp>
#include <cstring>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/tree/tree.h"

namespace kd::writers {
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

torch::Tensor decode_png(const std::string& bytes) {
  if (bytes.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) != 0) {
    throw CorruptionError("not a PNG image");
  }
  std::string error;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
  png_infop info = png_create_info_struct(png);
  Reader reader{&bytes, 0};
  torch::Tensor out;
  png_bytep rows = nullptr;
  int w = 0, h = 0, c = 0;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw CorruptionError("PNG decoding failed: " + error);
  }
  png_set_read_fn(png, &reader, read_from_string);
  png_read_info(png, info);
  w = static_cast<int>(png_get_image_width(png, info));
  h = static_cast<int>(png_get_image_height(png, info));
  c = png_get_channels(png, info);
  if (png_get_bit_depth(png, info) != 8) {
    error = "only 8-bit images are supported";
    png_longjmp(png, 1);
  }
  out = torch::empty({h, w, c}, torch::kByte);
  rows = out.data_ptr<uint8_t>();
  for (int y = 0; y < h; ++y) png_read_row(png, rows + static_cast<std::ptrdiff_t>(y) * w * c, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return out;
}

}  // namespace kd::writers
