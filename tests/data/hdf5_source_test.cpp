// The Hdf5 source against files h5py writes: every layout h5py offers (contiguous, chunked,
// compressed, shuffled), each dtype in either byte order, shards, and the errors of files that do
// not fit. The values are a formula of the index, computed again here.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/hdf5_source_internal.h"

namespace fs = std::filesystem;

namespace {

// Runs `script` (Python, with numpy as np and h5py imported) in `dir`.
void run_h5py(const fs::path& dir, const std::string& script) {
  std::ofstream(dir / "write.py") << "import numpy as np\nimport h5py\nimport os\nos.chdir(" << dir << ")\n" << script;
  const std::string command = std::string(KD_PYTHON) + " " + (dir / "write.py").string() + " 2>&1";
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
}

kd::data::Hdf5Source open_h5(const std::string& path, const std::string& fields) {
  return kd::data::Hdf5Source(kd::config::Node::parse("{path: '" + path + "', fields: " + fields + "}", "exp.yaml"));
}

// Example i of the datasets written below: image[i] = (i * 7 + arange(12)) % 256 as [3, 4].
torch::Tensor image_of(int64_t i) { return (torch::arange(12, torch::kLong) + i * 7).remainder(256).reshape({3, 4}); }

}  // namespace

TEST_CASE("Hdf5 reads examples of h5py's datasets by index, in every layout and byte order h5py writes") {
  const fs::path dir = kd::testing::made_fresh_dir("kd_h5_");
  run_h5py(dir, R"(
n = 50
i = np.arange(n)
image = ((i[:, None] * 7 + np.arange(12)) % 256).reshape(n, 3, 4)
with h5py.File('data.h5', 'w') as f:
    f['contiguous'] = image.astype(np.uint8)
    f.create_dataset('chunked', data=image.astype(np.float32), chunks=(8, 3, 4))
    f.create_dataset('gzip', data=image.astype('>i4'), chunks=(4, 3, 4), compression='gzip', shuffle=True)
    f['big_endian_f8'] = (image / 4).astype('>f8')
    f['half'] = (image / 8).astype(np.float16)
    g = f.create_group('labels')
    g['u16'] = (i * 1000 + 7).astype(np.uint16)
    g['u32'] = (i * 90000000 + 1).astype(np.uint32)
    g['i64'] = (i - 25).astype(np.int64)
    g['bool'] = i % 3 == 0
    g['i8'] = (i - 25).astype(np.int8)
)");
  const kd::data::Hdf5Source source =
      open_h5((dir / "data.h5").string(),
              "{image: contiguous, chunked: chunked, gzip: gzip, be: big_endian_f8, half: half, u16: /labels/u16, u32: "
              "labels/u32, i64: /labels/i64, flag: /labels/bool, i8: /labels/i8}");
  REQUIRE(source.random_access());
  REQUIRE(source.size() == 50);
  for (const int64_t i : {0, 1, 7, 8, 31, 49}) {
    INFO("example " << i);
    const kd::Tree e = source.get(i);
    const torch::Tensor expected = image_of(i);
    CHECK(e.get("image").tensor().scalar_type() == torch::kByte);
    CHECK(e.get("image").tensor().equal(expected.to(torch::kByte)));
    CHECK(e.get("chunked").tensor().equal(expected.to(torch::kFloat)));
    CHECK(e.get("gzip").tensor().equal(expected.to(torch::kInt)));
    CHECK(e.get("be").tensor().equal(expected.to(torch::kDouble) / 4));
    CHECK(e.get("half").tensor().scalar_type() == torch::kHalf);
    CHECK(e.get("half")
              .tensor()
              .to(torch::kFloat)
              .equal((expected.to(torch::kFloat) / 8).to(torch::kHalf).to(torch::kFloat)));
    CHECK(e.get("u16").tensor().scalar_type() == torch::kInt);
    CHECK(e.get("u16").tensor().item<int64_t>() == (i * 1000 + 7) % 65536);
    CHECK(e.get("u32").tensor().scalar_type() == torch::kLong);
    CHECK(e.get("u32").tensor().item<int64_t>() == (i * 90000000 + 1) % (int64_t{1} << 32));
    CHECK(e.get("i64").tensor().item<int64_t>() == i - 25);
    CHECK(e.get("flag").tensor().scalar_type() == torch::kBool);
    CHECK(e.get("flag").tensor().item<bool>() == (i % 3 == 0));
    CHECK(e.get("i8").tensor().item<int64_t>() == i - 25);
  }
  // Contiguous datasets are read directly, the others through libhdf5; the log says which.
  const std::string described = source.describe();
  CHECK_THAT(described,
             Catch::Contains("image: contiguous uint8(3, 4),") && Catch::Contains("gzip int32(3, 4) via HDF5"));
  // A compressed dataset in chunks of several examples is slow to read shuffled: the run says so.
  const std::vector<std::string> warnings = source.warnings();
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("\"gzip\" is compressed in chunks of 4 examples"));

  // Worker threads read at once: every example of every field, by four threads, as one thread reads it.
  const torch::Tensor whole = source.load().get("gzip").tensor();
  std::vector<torch::Tensor> read(50);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t i = t; i < 50; i += 4) {
        read[static_cast<std::size_t>(i)] = source.get(i).get("gzip").tensor();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(torch::stack(read).equal(whole));
  fs::remove_all(dir);
}

TEST_CASE("Hdf5 concatenates the shards a glob matches, in sorted order, and names an example by its file") {
  const fs::path dir = kd::testing::made_fresh_dir("kd_h5_shards_");
  run_h5py(dir, R"(
starts = [0, 20, 30]
for s, (a, b) in enumerate(zip(starts, starts[1:] + [45])):
    i = np.arange(a, b)
    with h5py.File('part-%d.h5' % s, 'w') as f:
        f['x'] = ((i[:, None] * 7 + np.arange(12)) % 256).reshape(-1, 3, 4).astype(np.uint8)
        f['y'] = i
)");
  const kd::data::Hdf5Source source = open_h5((dir / "part-*.h5").string(), "{x: x, y: y}");
  REQUIRE(source.size() == 45);
  for (const int64_t i : {0, 19, 20, 29, 30, 44}) {
    const kd::Tree e = source.get(i);
    CHECK(e.get("x").tensor().equal(image_of(i).to(torch::kByte)));
    CHECK(e.get("y").tensor().item<int64_t>() == i);
  }
  CHECK_THAT(source.name_of(31), Catch::EndsWith("part-2.h5\" example 1"));
  CHECK_THAT(source.describe(), Catch::EndsWith("} in 3 files"));
  fs::remove_all(dir);
}

TEST_CASE("Hdf5 names the file and dataset of anything it cannot read") {
  const fs::path dir = kd::testing::made_fresh_dir("kd_h5_bad_");
  run_h5py(dir, R"(
with h5py.File('data.h5', 'w') as f:
    f['x'] = np.zeros((10, 2), np.float32)
    f['short'] = np.zeros(9, np.int64)
    f['scalar'] = 3.0
    f['text'] = np.array([b'a', b'b'])
    f['u64'] = np.zeros(10, np.uint64)
    f['complex'] = np.zeros(10, np.complex64)
    f.create_group('group')
with h5py.File('mix-a.h5', 'w') as f:
    f['x'] = np.zeros((10, 2), np.float32)
with h5py.File('mix-b.h5', 'w') as f:
    f['x'] = np.zeros((5, 3), np.float32)
with h5py.File('big.h5', 'w') as f:
    f['x'] = np.arange(100000, dtype=np.float64)
open('not.h5', 'wb').write(b'not an HDF5 file at all' * 100)
data = open('big.h5', 'rb').read()
open('cut.h5', 'wb').write(data[:len(data) // 2])
)");
  const std::string file = (dir / "data.h5").string();
  CHECK_THROWS_WITH(open_h5(file, "{x: missing}"),
                    Catch::Contains("data.h5\" dataset \"missing\" does not exist") && Catch::Contains("h5ls -r"));
  CHECK_THROWS_WITH(open_h5(file, "{x: x, y: short}"), Catch::Contains("\"short\" holds 9 examples"));
  CHECK_THROWS_WITH(open_h5(file, "{x: scalar}"), Catch::Contains("\"scalar\" is a scalar"));
  CHECK_THROWS_WITH(open_h5(file, "{x: text}"), Catch::Contains("\"text\" holds 1-byte string values"));
  CHECK_THROWS_WITH(open_h5(file, "{x: u64}"), Catch::Contains("\"u64\" holds uint64") && Catch::Contains("int64"));
  CHECK_THROWS_WITH(open_h5(file, "{x: complex}"), Catch::Contains("\"complex\" holds 8-byte compound values"));
  CHECK_THROWS_WITH(open_h5(file, "{x: group}"), Catch::Contains("\"group\" cannot be opened as a dataset"));
  CHECK_THROWS_WITH(open_h5((dir / "mix-*.h5").string(), "{x: x}"),
                    Catch::Contains("mix-b.h5\" dataset \"x\" has examples of float32(3), ") &&
                        Catch::Contains("mix-a.h5\" dataset \"x\" float32(2)"));
  CHECK_THROWS_WITH(open_h5((dir / "not.h5").string(), "{x: x}"), Catch::Contains("not.h5\" is not an HDF5 file"));
  CHECK_THROWS_AS(open_h5((dir / "cut.h5").string(), "{x: x}"), kd::CorruptionError);
  CHECK_THROWS_AS(open_h5((dir / "missing.h5").string(), "{x: x}"), kd::IOError);
  CHECK_THROWS_WITH(open_h5((dir / "none-*.h5").string(), "{x: x}"),
                    Catch::Contains("exp.yaml:1:") && Catch::Contains("no file matches"));
  CHECK_THROWS_WITH(open_h5(file, "{}"), Catch::Contains("fields maps each batch key to a dataset"));
  fs::remove_all(dir);
}
