#include "trainer/runtime/cores.h"

#include <sched.h>

#include <algorithm>
#include <thread>

// OpenMP's, from the runtime LibTorch loads (libgomp); absent when LibTorch runs without one.
extern "C" [[gnu::weak]] void omp_set_num_threads(int);

namespace kd::runtime {

int64_t available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max<int64_t>(1, std::thread::hardware_concurrency());
}

void use_one_thread_for_ops_here() {
  // ATen's parallel_for asks omp_get_max_threads() of the calling thread: this thread's setting.
  if (omp_set_num_threads != nullptr) omp_set_num_threads(1);
}

}  // namespace kd::runtime
