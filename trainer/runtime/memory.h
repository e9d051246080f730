// The memory this process has used: its peak resident set, as the kernel counts it, and the peak
// of LibTorch's CUDA allocator; and how the C library's allocator keeps what a step frees.
#pragma once

#include <cstdint>
#include <string>

namespace kd::runtime {

// The highest resident set size of this process so far, in bytes (getrusage's ru_maxrss); 0
// where the system does not tell.
int64_t peak_host_memory_bytes();

// The most bytes of tensors LibTorch has held on CUDA device `index` (its caching allocator's
// peak); -1 where kd is built against a LibTorch without CUDA.
int64_t peak_device_memory_bytes(int index);

// A training step frees its activations, gradients and workspaces and allocates the same sizes
// again in the next step. glibc's malloc gives freed memory at the top of a heap back to the
// kernel once it exceeds 128 KiB (M_TRIM_THRESHOLD) and serves blocks above a threshold it
// adapts as it goes with their own mmap (M_MMAP_THRESHOLD): the next step then takes fresh pages
// from the kernel, zeroed and faulted in one by one, on every thread (measured: the flagship CNN
// at 14 steps/s on 2 cores where it makes 27 with the memory kept). So kd keeps freed memory for
// reuse: M_MMAP_THRESHOLD fixed at 32 MiB (glibc's largest) and M_TRIM_THRESHOLD at 2 GiB (freed
// memory stays with the process up to its peak, as LibTorch's caching CUDA allocator keeps
// device memory). Left as it is where the environment chooses (MALLOC_TRIM_THRESHOLD_,
// MALLOC_MMAP_THRESHOLD_, GLIBC_TUNABLES) or preloads another allocator (LD_PRELOAD), and on
// other C libraries. Called once per process (later calls return the first one's words); says
// what it did, for the log.
std::string keep_freed_memory();

}  // namespace kd::runtime
