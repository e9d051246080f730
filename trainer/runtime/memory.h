// The memory this process has used: its peak resident set, as the kernel counts it, and the peak
// of LibTorch's CUDA allocator.
#pragma once

#include <cstdint>

namespace kd::runtime {

// The highest resident set size of this process so far, in bytes (getrusage's ru_maxrss); 0
// where the system does not tell.
int64_t peak_host_memory_bytes();

// The most bytes of tensors LibTorch has held on CUDA device `index` (its caching allocator's
// peak); -1 where kd is built against a LibTorch without CUDA.
int64_t peak_device_memory_bytes(int index);

}  // namespace kd::runtime
