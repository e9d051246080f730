#define KD_COMPAT_CUDA_MEMORY
#include "trainer/runtime/memory.h"

#include <sys/resource.h>

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

}  // namespace kd::runtime
