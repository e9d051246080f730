// The processors this process may run on: those of its CPU affinity mask (taskset, a batch
// system's cgroup cpuset, numactl), which std::thread::hardware_concurrency ignores.
#pragma once

#include <cstdint>

namespace kd::runtime {

// At least 1.
int64_t available_cores();

}  // namespace kd::runtime
