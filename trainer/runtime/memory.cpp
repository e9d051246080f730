#define KD_COMPAT_CUDA_MEMORY
#include "trainer/runtime/memory.h"

#include <sys/resource.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <climits>
#include <cstdlib>
#include <mutex>

#include "trainer/compat/torch_compat.h"

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

int64_t peak_device_memory_bytes(int index) {
#ifdef KD_WITH_CUDA
  return compat::cuda_peak_allocated_bytes(index);
#else
  (void)index;
  return -1;
#endif
}

std::string keep_freed_memory() {
  static std::once_flag once;
  static std::string said;
  std::call_once(once, [] {
#if defined(__GLIBC__)
    for (const char* chosen : {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"}) {
      const char* value = std::getenv(chosen);
      if (value != nullptr && *value != '\0') {
        said = std::string("as the environment chooses (") + chosen + " is set)";
        return;
      }
    }
    if (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1) {
      said =
          "freed memory kept for reuse (glibc malloc: M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 2 GiB; "
          "set MALLOC_TRIM_THRESHOLD_ to choose)";
    } else {
      said = "glibc's defaults (mallopt refused kd's thresholds)";
    }
#else
    said = "the C library's defaults";
#endif
  });
  return said;
}

}  // namespace kd::runtime
