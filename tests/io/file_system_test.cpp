#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/io/forwarding_file_system.h"
#include "trainer/common/error.h"
#include "trainer/io/file_system.h"

namespace fs = std::filesystem;

namespace {

fs::path fresh_dir() {
  std::random_device rd;
  const fs::path dir = fs::temp_directory_path() / ("kd_io_test_" + std::to_string(rd()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> names(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

// Fails every write, after writing half of it (a disk that fills up).
class FullDisk : public kd::testing::ForwardingFileSystem {
 public:
  void write_file(const std::string& path, std::string_view data) override {
    base_->write_file(path, data.substr(0, data.size() / 2));
    throw kd::IOError("writing \"" + path + "\" failed: No space left on device");
  }
};

}  // namespace

TEST_CASE("write_file_atomically creates or replaces a file and leaves no temporary") {
  const fs::path dir = fresh_dir();
  auto fsys = kd::io::posix_file_system();
  const std::string path = (dir / "config.yaml").string();
  kd::io::write_file_atomically(*fsys, path, "a: 1\n");
  CHECK(read(path) == "a: 1\n");
  kd::io::write_file_atomically(*fsys, path, "b: 2\n");
  CHECK(read(path) == "b: 2\n");
  CHECK(names(dir) == std::vector<std::string>{"config.yaml"});
  fs::remove_all(dir);
}

TEST_CASE("a failed atomic write keeps the old file whole and removes its temporary") {
  const fs::path dir = fresh_dir();
  const std::string path = (dir / "best.json").string();
  kd::io::write_file_atomically(*kd::io::posix_file_system(), path, "{\"step\": 100}");
  FullDisk full;
  CHECK_THROWS_AS(kd::io::write_file_atomically(full, path, "{\"step\": 200}"), kd::IOError);
  CHECK_THROWS_AS(kd::io::create_file_atomically(full, (dir / "new.bin").string(), "bytes"), kd::IOError);
  CHECK(read(path) == "{\"step\": 100}");
  CHECK(names(dir) == std::vector<std::string>{"best.json"});
  fs::remove_all(dir);
}

TEST_CASE("create_file_atomically never replaces a file, even one made meanwhile") {
  const fs::path dir = fresh_dir();
  auto fsys = kd::io::posix_file_system();
  const std::string path = (dir / "params.safetensors").string();
  kd::io::create_file_atomically(*fsys, path, "first");
  CHECK_THROWS_AS(kd::io::create_file_atomically(*fsys, path, "second"), kd::IOError);
  CHECK(read(path) == "first");
  CHECK(names(dir) == std::vector<std::string>{"params.safetensors"});

  // Threads racing to create one file: exactly one wins, and the file is that one's whole.
  const std::string raced = (dir / "raced.bin").string();
  constexpr int kThreads = 8;
  std::vector<int> won(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      try {
        kd::io::create_file_atomically(*fsys, raced, std::string(1000, static_cast<char>('a' + i)));
        won[static_cast<std::size_t>(i)] = 1;
      } catch (const kd::IOError&) {
      }
    });
  }
  for (auto& t : threads) t.join();
  int winners = 0, winner = -1;
  for (int i = 0; i < kThreads; ++i) {
    if (won[static_cast<std::size_t>(i)]) ++winners, winner = i;
  }
  REQUIRE(winners == 1);
  CHECK(read(raced) == std::string(1000, static_cast<char>('a' + winner)));
  fs::remove_all(dir);
}
