// The processors this process may run on: those of its CPU affinity mask (taskset, a batch
// system's cgroup cpuset, numactl), which std::thread::hardware_concurrency ignores; and the
// threads LibTorch's operations use on a thread of kd's own.
#pragma once

#include <cstdint>

namespace kd::runtime {

// At least 1.
int64_t available_cores();

// LibTorch's operations called from this thread from now on run on this thread alone (its
// OpenMP team size, a per-thread setting; the other threads' are unchanged). For threads that
// run beside each other, as the data workers do: each would otherwise start a team as large as
// the training's.
void use_one_thread_for_ops_here();

}  // namespace kd::runtime
