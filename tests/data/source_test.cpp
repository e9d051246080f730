#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/source.h"

namespace fs = std::filesystem;
using kd::config::Node;

namespace {

// An IDX file (big-endian header: magic 0x0000080N, then each dimension) of unsigned bytes.
void write_idx_file(const fs::path& path, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  const auto word = [&](uint32_t v) {
    const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
    out.write(b, 4);
  };
  word(0x0800u + static_cast<uint32_t>(dims.size()));
  for (const uint32_t d : dims) word(d);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Three 2x2 pictures with the given labels, as Fashion-MNIST's training files.
fs::path mnist_like(const std::vector<uint8_t>& labels) {
  const fs::path dir = kd::testing::made_fresh_dir("kd_source_test_");
  write_idx_file(dir / "train-images-idx3-ubyte", {3, 2, 2}, std::vector<uint8_t>(12, 7));
  write_idx_file(dir / "train-labels-idx1-ubyte", {3}, labels);
  return dir;
}

}  // namespace

TEST_CASE("FashionMnist reads its IDX files and refuses a label that is not one of its ten classes") {
  const fs::path good = mnist_like({0, 9, 4});
  const auto tree =
      kd::data::source_registry().create(Node::parse("{type: FashionMnist, path: " + good.string() + "}"))->load();
  CHECK(tree.get("label").tensor().equal(torch::tensor({0, 9, 4})));
  CHECK(tree.get("image").tensor().sizes() == torch::IntArrayRef({3, 2, 2}));
  fs::remove_all(good);
  const fs::path bad = mnist_like({0, 200, 4});
  const auto source =
      kd::data::source_registry().create(Node::parse("{type: FashionMnist, path: " + bad.string() + "}"));
  CHECK_THROWS_AS(source->load(), kd::CorruptionError);
  CHECK_THROWS_WITH(source->load(), Catch::Contains("train-labels-idx1-ubyte: label 1 is 200, not a class"));
  fs::remove_all(bad);
}
