#include "trainer/runtime/memory.h"

#include <sys/resource.h>

namespace kd::runtime {

int64_t peak_host_memory_bytes() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
#ifdef __APPLE__
  return static_cast<int64_t>(usage.ru_maxrss);  // bytes on macOS
#else
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // KiB on Linux and the BSDs
#endif
}

}  // namespace kd::runtime
