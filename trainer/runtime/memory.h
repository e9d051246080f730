// The memory this process has used: its peak resident set, as the kernel counts it.
#pragma once

#include <cstdint>

namespace kd::runtime {

// The highest resident set size of this process so far, in bytes (getrusage's ru_maxrss); 0
// where the system does not tell.
int64_t peak_host_memory_bytes();

}  // namespace kd::runtime
