// kd::runtime: the BLAS that LibTorch's matrix products run on, and making sure it runs the
// kernels the CPU supports. Debian's OpenBLAS (DYNAMIC_ARCH) picks its kernels when the library
// loads, from the CPU model; on a CPU model it does not know it falls back to SSE3 ("Prescott")
// kernels even where AVX-512 exists, and every matrix product runs several times slower. The
// kernel cannot change once loaded, so the `kd` binary's main starts the process again with
// OPENBLAS_CORETYPE set (blas_restart_kernel says when and with what); a program that embeds kd
// gets a warning naming the fix (blas_warning). The library itself never restarts a process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kd::runtime {

// The vector features of this CPU that OpenBLAS's x86-64 kernels use.
struct CpuFeatures {
  bool sse3 = false;
  bool sse4_2 = false;
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512dq = false;
  bool avx512cd = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512_bf16 = false;
  bool amd = false;  // AuthenticAMD (OpenBLAS has Zen kernels)
};
CpuFeatures cpu_features();

// The OpenBLAS kernel (a DYNAMIC_ARCH core name, as OPENBLAS_CORETYPE takes it) that uses the
// most of `cpu`: Cooperlake (AVX-512 with BF16), SkylakeX (AVX-512), Haswell or Zen (AVX2 with
// FMA), Sandybridge (AVX), Nehalem (SSE4.2), Prescott (SSE3).
std::string best_openblas_kernel(const CpuFeatures& cpu);

// The instruction tier a kernel uses: 4 AVX-512, 3 AVX2 with FMA, 2 AVX, 1 SSE; 0 for a name kd
// does not know. Kernels of one tier run float matrix products at about the same speed (each
// tier up about doubles it).
int openblas_kernel_tier(const std::string& kernel);

// What this process's BLAS is.
struct BlasInfo {
  // openblas_get_config() ("OpenBLAS 0.3.21 DYNAMIC_ARCH ..."), MKL's version string ("Intel(R)
  // oneAPI Math Kernel Library Version ..."), or a line saying it is neither.
  std::string library;
  std::string kernel;  // openblas_get_corename() ("SkylakeX"); empty when not OpenBLAS
  int threads = 0;     // openblas_get_num_threads(), MKL's (LibTorch's intra-op threads); 0 when neither
};
BlasInfo blas_info();

// The OPENBLAS_CORETYPE to run with when OpenBLAS chose kernels of a lower tier than this CPU's
// best (`chosen` against `cpu`); nullopt when the chosen ones are of its tier, or not OpenBLAS's.
std::optional<std::string> better_openblas_kernel(const std::string& chosen, const CpuFeatures& cpu);

// The OPENBLAS_CORETYPE a program should start again with: when `info` is a DYNAMIC_ARCH OpenBLAS
// that chose kernels of a lower tier than `cpu`'s best and `coretype` (the process's
// OPENBLAS_CORETYPE, null when unset) is not set, by the user or the machine: kd never overrides
// it. nullopt when nothing is to be done. The `kd` binary's main asks this first thing.
std::optional<std::string> blas_restart_kernel(const BlasInfo& info, const CpuFeatures& cpu, const char* coretype);

// In a process started again for its BLAS: the kernel OpenBLAS had chosen at the first start,
// which describe_blas and blas_warning then name.
void set_blas_restarted_from(std::string kernel);

// A warning for the run's log when this process's OpenBLAS kernels are of a lower tier than the CPU's,
// naming the fix; nullopt when they are not.
std::optional<std::string> blas_warning();

// "OpenBLAS 0.3.21 DYNAMIC_ARCH ..., kernel SkylakeX" for the run header (and, after a
// re-execution, which kernel OpenBLAS had chosen).
std::string describe_blas();

// This process's single-precision matrix product speed: the best of a few n x n by n x n
// products on the current intra-op threads, in GFLOP/s (kd inspect prints it).
double measure_sgemm_gflops(int64_t n = 1024);

}  // namespace kd::runtime
