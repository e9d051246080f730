#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <jpeglib.h>
#include <torch/torch.h>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/data/image_files.h"
#include "trainer/data/image_folder_internal.h"
#include "trainer/io/png.h"

namespace fs = std::filesystem;
using kd::Tree;
using kd::config::Node;

namespace {

void write_file(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

// A JPEG of `image` (uint8 [H, W, 3]) at quality 95, written with libjpeg.
std::string encode_jpeg(const torch::Tensor& image) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* out = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &out, &size);
  c.image_width = static_cast<JDIMENSION>(image.size(1));
  c.image_height = static_cast<JDIMENSION>(image.size(0));
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  const torch::Tensor rgb = image.contiguous();
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = rgb.data_ptr<uint8_t>() + static_cast<int64_t>(c.next_scanline) * image.size(1) * 3;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::string bytes(reinterpret_cast<char*>(out), size);
  jpeg_destroy_compress(&c);
  std::free(out);
  return bytes;
}

torch::Tensor solid(int64_t h, int64_t w, std::vector<int> rgb) {
  return torch::tensor(std::vector<int64_t>(rgb.begin(), rgb.end()), torch::kByte)
      .reshape({1, 1, static_cast<int64_t>(rgb.size())})
      .expand({h, w, static_cast<int64_t>(rgb.size())})
      .contiguous();
}

Tree load(const fs::path& dir, const std::string& options = "") {
  return kd::data::ImageFolder(Node::parse("{path: " + dir.string() + options + "}", "exp.yaml")).load();
}

}  // namespace

TEST_CASE("ImageFolder: a folder per class, sorted; PNG and JPEG; gray, RGB and RGBA to the channels asked") {
  const fs::path dir = kd::testing::fresh_dir("kd_image_folder_");
  write_file(dir / "dog" / "a.png", kd::io::encode_png(solid(4, 6, {100, 150, 200, 255})));  // RGBA
  write_file(dir / "dog" / "b.jpg", kd::io::encode_png(solid(4, 6, {10})));  // gray PNG named .jpg: by content
  write_file(dir / "cat" / "c.jpeg", encode_jpeg(solid(4, 6, {40, 80, 120})));
  write_file(dir / "cat" / "notes.txt", "not an image");  // skipped
  const Tree rgb = load(dir);
  const torch::Tensor images = rgb.get("image").tensor(), labels = rgb.get("label").tensor();
  CHECK(images.sizes() == torch::IntArrayRef({3, 4, 6, 3}));
  CHECK(labels.equal(torch::tensor({0, 1, 1})));  // cat/c.jpeg, dog/a.png, dog/b.jpg
  // JPEG is lossy: a flat colour comes back within a few levels (DC quantization and YCbCr rounding).
  CHECK((images[0].to(torch::kInt) - solid(4, 6, {40, 80, 120}).to(torch::kInt)).abs().max().item<int>() <= 4);
  CHECK(images[1].equal(solid(4, 6, {100, 150, 200})));  // alpha dropped
  CHECK(images[2].equal(solid(4, 6, {10, 10, 10})));     // gray repeated
  // channels: 1 is BT.601 luma: 0.299 * 100 + 0.587 * 150 + 0.114 * 200 = 140.75.
  const torch::Tensor gray = load(dir, ", channels: 1").get("image").tensor();
  CHECK(gray.sizes() == torch::IntArrayRef({3, 4, 6, 1}));
  CHECK(gray[1].equal(solid(4, 6, {141})));
  // classes orders them; size resizes each image as it is read.
  CHECK(load(dir, ", classes: [dog, cat]").get("label").tensor().equal(torch::tensor({0, 0, 1})));
  CHECK(load(dir, ", size: [2, 3]").get("image").tensor().sizes() == torch::IntArrayRef({3, 2, 3, 3}));
  kd::data::ImageFolder described(Node::parse("{path: " + dir.string() + "}", "exp.yaml"));
  described.load();
  CHECK_THAT(described.describe(), Catch::Contains("classes cat=0, dog=1"));
  fs::remove_all(dir);
}

TEST_CASE("decode_image converts palettes, transparency, 2-bit gray and 16-bit PNGs to 8-bit channels") {
  const auto read = [](const std::string& name) {
    std::ifstream in(std::string(KD_SOURCE_DIR) + "/tests/fuzz/corpus/image/" + name, std::ios::binary);
    return kd::data::decode_image(std::string((std::istreambuf_iterator<char>(in)), {}), name);
  };
  // palette.png: 2 x 2, indices [[0, 1], [1, 0]] into red and blue, red 50% transparent (tRNS 0x80).
  const torch::Tensor palette = read("palette.png");
  CHECK(palette.equal(torch::tensor({255, 0, 0, 128, 0, 0, 255, 255, 0, 0, 255, 255, 255, 0, 0, 128}, torch::kByte)
                          .reshape({2, 2, 4})));
  // gray2bit.png: 4 x 2 pixels of 2 bits, 0b00011011 and 0b11100100: levels scaled by 255 / 3.
  CHECK(read("gray2bit.png").equal(torch::tensor({0, 85, 170, 255, 255, 170, 85, 0}, torch::kByte).reshape({2, 4, 1})));
  // rgba16.png: 16-bit samples 0x0001, 0x0203, ...: their high bytes.
  CHECK(read("rgba16.png").flatten().equal(torch::arange(0, 32, 2).to(torch::kByte)));
  CHECK(read("rgb.png").sizes() == torch::IntArrayRef({2, 3, 3}));
  CHECK(read("gray_progressive.jpg").sizes() == torch::IntArrayRef({4, 6, 1}));
  CHECK(read("rgb.jpg").sizes() == torch::IntArrayRef({4, 6, 3}));
}

TEST_CASE("ImageFolder: images of other sizes, damaged files and empty folders are named in the error") {
  const fs::path dir = kd::testing::fresh_dir("kd_image_folder_");
  write_file(dir / "a" / "1.png", kd::io::encode_png(solid(4, 6, {1, 2, 3})));
  write_file(dir / "a" / "2.png", kd::io::encode_png(solid(5, 6, {1, 2, 3})));
  CHECK_THROWS_WITH(load(dir), Catch::Contains("1.png\" is uint8[4, 6, 3], of \"") &&
                                   Catch::Contains("2.png\" uint8[5, 6, 3]") && Catch::Contains("size option"));
  CHECK(load(dir, ", size: [4, 4]").get("image").tensor().size(0) == 2);
  write_file(dir / "a" / "3.png", "\x89PNG\r\n\x1a\n but then nothing");
  CHECK_THROWS_WITH(load(dir, ", size: [4, 4]"), Catch::Contains("3.png: not a readable PNG image"));
  fs::remove(dir / "a" / "3.png");
  write_file(dir / "a" / "4.jpg", std::string("\xFF\xD8\xFF\xE0 truncated", 14));
  CHECK_THROWS_WITH(load(dir, ", size: [4, 4]"), Catch::Contains("4.jpg: not a readable JPEG image"));
  fs::remove(dir / "a" / "4.jpg");
  fs::create_directories(dir / "b");
  CHECK_THROWS_WITH(load(dir, ", size: [4, 4]"), Catch::Contains("class folder \"b\" holds no .png or .jpg file"));
  CHECK_THROWS_WITH(load(dir, ", classes: [a, c]"), Catch::Contains("no such folder"));
  CHECK_THROWS_WITH(load(dir / "a" / "1.png"), Catch::Contains("is not a directory"));
  CHECK_THROWS_WITH(kd::data::decode_image("GIF89a", "x.gif"), Catch::Contains("neither a PNG nor a JPEG"));
  fs::remove_all(dir);
}

TEST_CASE("ImageFolder: split train/test divides the sorted files, disjoint and together all") {
  const fs::path dir = kd::testing::fresh_dir("kd_image_folder_");
  for (int i = 0; i < 10; ++i) {
    write_file(dir / (i % 2 ? "odd" : "even") / (std::to_string(i) + ".png"),
               kd::io::encode_png(solid(2, 2, {i * 10, 0, 0})));
  }
  const auto reds = [](const Tree& t) {
    std::set<int> out;
    const torch::Tensor images = t.get("image").tensor();
    for (int64_t i = 0; i < images.size(0); ++i) out.insert(images[i][0][0][0].item<int>());
    return out;
  };
  const auto train = reds(load(dir, ", split: train, test_fraction: 0.3, split_seed: 1"));
  const auto test = reds(load(dir, ", split: test, test_fraction: 0.3, split_seed: 1"));
  CHECK(train.size() == 7);
  CHECK(test.size() == 3);
  std::set<int> all(train.begin(), train.end());
  all.insert(test.begin(), test.end());
  CHECK(all.size() == 10);
  fs::remove_all(dir);
}
