#include "trainer/runtime/memory.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

namespace {

// A field of /proc/self/status in bytes (VmHWM: the kernel's peak RSS, VmRSS: the current one).
int64_t proc_status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

}  // namespace

TEST_CASE("peak_host_memory_bytes is the kernel's peak resident set and grows with touched memory", "[runtime]") {
  const int64_t before = kd::runtime::peak_host_memory_bytes();
  const int64_t hwm = proc_status_bytes("VmHWM");
  const int64_t rss = proc_status_bytes("VmRSS");
  REQUIRE(hwm > 0);  // Linux, the one system kd supports
  REQUIRE(rss > 0);
  // The same counter, read a moment apart: within 1 MiB.
  CHECK(before >= hwm - (1 << 20));
  CHECK(before <= hwm + (1 << 20));
  // Memory written to beyond the peak so far (what earlier tests freed included) raises it.
  const std::size_t kBytes = static_cast<std::size_t>(hwm - rss) + (64u << 20);
  char* block = static_cast<char*>(std::malloc(kBytes));
  REQUIRE(block != nullptr);
  std::memset(block, 1, kBytes);
  volatile char sink = block[kBytes / 2];
  (void)sink;
  const int64_t after = kd::runtime::peak_host_memory_bytes();
  std::free(block);
  CHECK(after >= before + (32 << 20));
}
