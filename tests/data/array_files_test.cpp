#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/array_files_internal.h"

namespace fs = std::filesystem;
using kd::config::Node;

namespace {

// A .npy file as NumPy 1.x writes one: the magic, version 1.0, a little-endian header length,
// the header dict padded with spaces to a multiple of 64 bytes and ended by '\n', the data.
void write_npy(const fs::path& path, const std::string& descr, const std::string& shape, const void* data,
               std::size_t bytes, bool fortran = false) {
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
  const std::size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const auto len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out << header;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
}

Node options(const std::string& yaml) { return Node::parse(yaml, "exp.yaml"); }

}  // namespace

TEST_CASE("Npy reads examples of memory-mapped arrays by index, its fields and shards side by side") {
  const fs::path dir = kd::testing::made_fresh_dir("kd_npy_");
  std::vector<float> x(6 * 2);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) / 2;
  write_npy(dir / "x_0.npy", "<f4", "(4, 2)", x.data(), 4 * 2 * sizeof(float));
  write_npy(dir / "x_1.npy", "<f4", "(2, 2)", x.data() + 8, 2 * 2 * sizeof(float));
  const std::vector<uint16_t> y = {1, 65535, 3, 4, 5, 6};  // uint16, read as int32
  write_npy(dir / "y_0.npy", "<u2", "(4,)", y.data(), 4 * 2);
  write_npy(dir / "y_1.npy", "<u2", "(2,)", y.data() + 4, 2 * 2);
  kd::data::NpySource source(options("{path: " + dir.string() + ", fields: {x: 'x_*.npy', y: 'y_*.npy'}}"));
  REQUIRE(source.size() == 6);
  for (int64_t i = 0; i < 6; ++i) {
    const kd::Tree e = source.get(i);
    CHECK(e.get("x").tensor().equal(torch::tensor({x[2 * i], x[2 * i + 1]})));
    CHECK(e.get("y").tensor().item<int64_t>() == y[static_cast<std::size_t>(i)]);
    CHECK(e.get("y").tensor().scalar_type() == torch::kInt);
  }
  CHECK_THAT(source.describe(), Catch::Contains("x: float32(2)") && Catch::Contains("2 shards"));
  // The whole of it, as load() stacks it.
  CHECK(source.load().get("x").tensor().equal(torch::tensor(x).reshape({6, 2})));
  fs::remove_all(dir);
}

TEST_CASE("Npy names the file of a header, dtype, order or length that does not fit") {
  const fs::path dir = kd::testing::made_fresh_dir("kd_npy_bad_");
  const std::vector<double> d(8, 1.0);
  write_npy(dir / "short.npy", "<f8", "(3, 3)", d.data(), 8 * sizeof(double));
  write_npy(dir / "big.npy", ">f8", "(8,)", d.data(), 8 * sizeof(double));
  write_npy(dir / "fortran.npy", "<f8", "(2, 4)", d.data(), 8 * sizeof(double), /*fortran=*/true);
  write_npy(dir / "complex.npy", "<c8", "(8,)", d.data(), 8 * sizeof(double));
  write_npy(dir / "a.npy", "<f8", "(8,)", d.data(), 8 * sizeof(double));
  write_npy(dir / "b.npy", "<f8", "(4,)", d.data(), 4 * sizeof(double));
  std::ofstream(dir / "text.npy") << "not an array";
  // Headers cut or garbled in every way a broken writer or a truncated copy leaves them.
  const std::vector<std::string> garbled = {
      "{'descr': '<f8', 'fortran_order': False, 'shape': (8,",
      "{'descr': '<f8', 'fortran_order': False, 'shape':",
      "{'descr': '<f8', 'fortran_order': False}",
      "{'descr': '<f8', 'fortran_order': False, 'shape': (x, 2)}",
      "{'descr': '<f8', 'fortran_order': False, 'shape': (-8,)}",
      "{'descr': '<f8', 'fortran_order': False, 'shape': ()}",
      "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}",
      "{'descr': 'f', 'shape': (8,)}",
      "{'descr': '|b1', 'fortran_order': False, 'shape': 1 ,'(x': 2 ), }",
      "{'descr"};
  for (std::size_t i = 0; i < garbled.size(); ++i) {
    std::string header = garbled[i] + "\n";
    std::ofstream out(dir / ("garbled" + std::to_string(i) + ".npy"), std::ios::binary);
    out.write("\x93NUMPY\x01\x00", 8);
    const char len[2] = {static_cast<char>(header.size() & 0xFF), static_cast<char>(header.size() >> 8)};
    out.write(len, 2);
    out << header;
    out.write(reinterpret_cast<const char*>(d.data()), 64);
  }
  const auto open = [&](const std::string& fields) {
    kd::data::NpySource source(options("{path: " + dir.string() + ", fields: " + fields + "}"));
  };
  CHECK_THROWS_WITH(open("{x: short.npy}"), Catch::Contains("short.npy\" holds 64 bytes of data, but its header says "
                                                            "(3, 3) of '<f8', 72 bytes: the file is cut short"));
  CHECK_THROWS_WITH(open("{x: big.npy}"), Catch::Contains("big.npy\" holds dtype '>f8'"));
  CHECK_THROWS_WITH(open("{x: fortran.npy}"), Catch::Contains("Fortran order"));
  CHECK_THROWS_WITH(open("{x: complex.npy}"), Catch::Contains("'<c8'"));
  CHECK_THROWS_WITH(open("{x: text.npy}"), Catch::Contains("text.npy\" is not an array np.save"));
  CHECK_THROWS_WITH(open("{x: a.npy, y: b.npy}"), Catch::Contains("b.npy\" holds 4 examples"));
  CHECK_THROWS_WITH(open("{x: 'none_*.npy'}"), Catch::Contains("exp.yaml:1:") && Catch::Contains("no file matches"));
  CHECK_THROWS_AS(open("{x: missing.npy}"), kd::IOError);
  CHECK_THROWS_WITH(open("{}"), Catch::Contains("fields maps each batch key"));
  for (std::size_t i = 0; i < garbled.size(); ++i) {
    INFO(garbled[i]);
    CHECK_THROWS_AS(open("{x: garbled" + std::to_string(i) + ".npy}"), kd::CorruptionError);
  }
  fs::remove_all(dir);
}

TEST_CASE("TokenFile gives windows of seq_len + 1 tokens as inputs and targets one ahead") {
  const fs::path dir = kd::testing::made_fresh_dir("kd_tokens_");
  std::vector<uint16_t> tokens(23);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>(60000 + i);
  std::ofstream(dir / "train.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 2));
  kd::data::TokenFile file(options("{path: " + (dir / "train.bin").string() + ", seq_len: 5}"));
  CHECK(file.size() == 4);  // (23 - 1) / 5 windows
  const kd::Tree w = file.get(3);
  CHECK(w.get("inputs").tensor().equal(torch::arange(60015, 60020)));
  CHECK(w.get("targets").tensor().equal(torch::arange(60016, 60021)));
  CHECK_THROWS_WITH(
      kd::data::TokenFile(options("{path: " + (dir / "train.bin").string() + ", seq_len: 5, vocab_size: 60010}"))
          .get(2),
      Catch::Contains("token 10 is 60010, not below vocab_size 60010"));
  CHECK_THROWS_WITH(kd::data::TokenFile(options("{path: " + (dir / "train.bin").string() + ", seq_len: 30}")),
                    Catch::Contains("holds 23 tokens, fewer than seq_len + 1 = 31"));
  CHECK_THROWS_WITH(
      kd::data::TokenFile(options("{path: " + (dir / "train.bin").string() + ", seq_len: 2, dtype: uint32}")),
      Catch::Contains("46 bytes, not a whole number of uint32 tokens"));
  // Raw text read as bytes.
  std::ofstream(dir / "text.txt") << "hello world";
  kd::data::TokenFile text(options("{path: " + (dir / "text.txt").string() + ", seq_len: 4, dtype: uint8}"));
  CHECK(text.get(1).get("inputs").tensor().equal(torch::tensor({'o', ' ', 'w', 'o'}, torch::kLong)));
  fs::remove_all(dir);
}

TEST_CASE("TokenFile reads a glob of files as one stream and splits it by file") {
  const fs::path dir = kd::testing::made_fresh_dir("kd_tokens_");
  // Ten files of 7 bytes each: file k holds 'a' + k seven times.
  std::string all;
  for (int k = 0; k < 10; ++k) {
    const char letter = static_cast<char>('a' + k);
    std::ofstream file(dir / (std::to_string(k) + ".txt"));
    for (int i = 0; i < 7; ++i) file.put(letter);
    all.append(7, letter);
  }
  const std::string glob = (dir / "*.txt").string();
  kd::data::TokenFile whole(options("{path: '" + glob + "', seq_len: 4, dtype: uint8}"));
  CHECK(whole.size() == (70 - 1) / 4);
  // Window 1 is bytes 4..8: it spans the first two files.
  const torch::Tensor expected = torch::tensor({'a', 'a', 'a', 'b'}, torch::kLong);
  CHECK(whole.get(1).get("inputs").tensor().equal(expected));
  CHECK(whole.get(1).get("targets").tensor().equal(torch::tensor({'a', 'a', 'b', 'b'}, torch::kLong)));
  for (int64_t i = 0; i < whole.size(); ++i) {
    const auto in = whole.get(i).get("inputs").tensor();
    for (int64_t j = 0; j < 4; ++j) REQUIRE(in[j].item<int64_t>() == all[static_cast<std::size_t>(i * 4 + j)]);
  }
  // split: train and test take disjoint files that cover the set (3 of 10 for test).
  const auto letters = [&](const std::string& split) {
    kd::data::TokenFile part(
        options("{path: '" + glob + "', seq_len: 6, dtype: uint8, split: " + split + ", test_fraction: 0.3}"));
    std::set<int64_t> seen;
    for (int64_t i = 0; i < part.size(); ++i) {
      const auto t = part.get(i).get("inputs").tensor();
      for (int64_t j = 0; j < t.size(0); ++j) seen.insert(t[j].item<int64_t>());
    }
    return seen;
  };
  const auto train = letters("train"), test = letters("test");
  CHECK(train.size() == 7);
  CHECK(test.size() == 3);
  for (int64_t letter : test) CHECK(train.count(letter) == 0);
  CHECK_THROWS_WITH(kd::data::TokenFile(
                        options("{path: '" + glob + "', seq_len: 4, dtype: uint8, split: test, test_fraction: 0.01}")),
                    Catch::Contains("leaves none for split test"));
  CHECK_THROWS_WITH(kd::data::TokenFile(options("{path: '" + glob + "', seq_len: 4, dtype: uint8, split: val}")),
                    Catch::Contains("split must be all, train or test"));
  CHECK_THROWS_WITH(kd::data::TokenFile(options("{path: '" + (dir / "g*.bin").string() + "', seq_len: 4}")),
                    Catch::Contains("no file matches"));
  fs::remove_all(dir);
}
