#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/io/forwarding_file_system.h"
#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/io/file_system.h"

namespace fs = std::filesystem;

namespace {

using kd::testing::made_fresh_dir;

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
  const fs::path dir = made_fresh_dir();
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
  const fs::path dir = made_fresh_dir();
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
  const fs::path dir = made_fresh_dir();
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

TEST_CASE("a file written from parts holds them joined, past writev's limit on buffers, and reads back exactly") {
  const fs::path dir = made_fresh_dir();
  auto fsys = kd::io::posix_file_system();
  std::vector<std::string> pieces;
  std::string joined;
  for (int i = 0; i < 3000; ++i) {  // IOV_MAX is 1024 on Linux
    pieces.push_back(i % 7 == 0 ? std::string()
                                : std::string(static_cast<std::size_t>(i % 50), static_cast<char>('a' + i % 26)));
    joined += pieces.back();
  }
  const std::vector<std::string_view> parts(pieces.begin(), pieces.end());
  const std::string path = (dir / "parts.bin").string();
  fsys->write_file_parts(path, parts);
  CHECK(read(path) == joined);
  fsys->write_file_parts(path, {});
  CHECK(read(path).empty());

  fsys->write_file(path, joined);
  std::vector<char> into;
  std::size_t asked = 0;
  fsys->read_file_into(path, [&](std::size_t size) {
    asked = size;
    into.resize(size);
    return into.data();
  });
  CHECK(asked == joined.size());
  CHECK(std::string(into.begin(), into.end()) == joined);
  CHECK_THROWS_AS(fsys->read_file_into((dir / "missing").string(), [&](std::size_t) { return into.data(); }),
                  kd::IOError);
  fs::remove_all(dir);
}

// Records every write_file and read_file (the operations a test double overrides).
class Recording : public kd::testing::ForwardingFileSystem {
 public:
  void write_file(const std::string& path, std::string_view data) override {
    written.emplace_back(data);
    ForwardingFileSystem::write_file(path, data);
  }
  std::string read_file(const std::string& path) override {
    ++reads;
    return ForwardingFileSystem::read_file(path);
  }
  std::vector<std::string> written;
  int reads = 0;
};

TEST_CASE("by default, parts are written through write_file and reads into memory go through read_file") {
  const fs::path dir = made_fresh_dir();
  Recording fsys;  // overrides neither write_file_parts nor read_file_into
  const std::string path = (dir / "f").string();
  fsys.write_file_parts(path, {"ab", "", "cde"});
  CHECK(fsys.written == std::vector<std::string>{"abcde"});
  std::string into;
  fsys.read_file_into(path, [&](std::size_t size) {
    into.resize(size);
    return into.data();
  });
  CHECK(fsys.reads == 1);
  CHECK(into == "abcde");
  fs::remove_all(dir);
}
