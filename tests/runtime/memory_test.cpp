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

#if defined(__GLIBC__)
#include <malloc.h>

TEST_CASE("keep_freed_memory serves a step's large blocks from the heap and keeps them when freed", "[runtime]") {
  const std::string said = kd::runtime::keep_freed_memory();
  if (said.rfind("as the environment chooses", 0) == 0) {
    WARN("the environment chooses the allocator's thresholds here: " << said);
    return;
  }
  REQUIRE_THAT(said, Catch::StartsWith("freed memory kept for reuse"));
  CHECK(kd::runtime::keep_freed_memory() == said);  // once per process
  // 16 MiB: glibc's defaults would map it with mmap (above 128 KiB) and unmap it when freed.
  const std::size_t size = std::size_t{16} << 20;
  const auto mapped_before = mallinfo2().hblkhd;
  auto* block = static_cast<char*>(std::malloc(size));
  REQUIRE(block != nullptr);
  std::memset(block, 1, size);
  CHECK(mallinfo2().hblkhd == mapped_before);  // from the heap, not a mapping of its own
  const auto heap_with_block = mallinfo2().arena;
  std::free(block);
  CHECK(mallinfo2().arena == heap_with_block);  // freed, but kept in the heap (not trimmed)
  CHECK(mallinfo2().fordblks >= size);          // for the next allocation
}
#endif
