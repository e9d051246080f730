#include "trainer/runtime/blas.h"

#include <dlfcn.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

namespace kd::runtime {
namespace {

// What the first start chose, in a re-executed kd; empty otherwise.
std::string& restarted_from() {
  static std::string kernel;
  return kernel;
}

template <typename Fn>
Fn openblas_symbol(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

// The kernel this process's OpenBLAS runs.
std::string chosen_kernel() {
  const auto corename = openblas_symbol<char* (*)()>("openblas_get_corename");
  return corename ? std::string(corename()) : std::string();
}

}  // namespace

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx)) {
    char vendor[13] = {};
    std::memcpy(vendor, &ebx, 4);
    std::memcpy(vendor + 4, &edx, 4);
    std::memcpy(vendor + 8, &ecx, 4);
    f.amd = std::strcmp(vendor, "AuthenticAMD") == 0;
  }
  __builtin_cpu_init();
  f.sse3 = __builtin_cpu_supports("sse3");
  f.sse4_2 = __builtin_cpu_supports("sse4.2");
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV).
  f.avx = __builtin_cpu_supports("avx");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512cd = __builtin_cpu_supports("avx512cd");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) f.avx512_bf16 = (eax >> 5) & 1;
#endif
  return f;
}

std::string best_openblas_kernel(const CpuFeatures& cpu) {
  const bool skylakex = cpu.avx512f && cpu.avx512dq && cpu.avx512cd && cpu.avx512bw && cpu.avx512vl;
  if (skylakex && cpu.avx512_bf16) return "Cooperlake";
  if (skylakex) return "SkylakeX";
  if (cpu.avx2 && cpu.fma) return cpu.amd ? "Zen" : "Haswell";
  if (cpu.avx) return "Sandybridge";
  if (cpu.sse4_2) return "Nehalem";
  return "Prescott";
}

int openblas_kernel_tier(const std::string& kernel) {
  // Names as openblas_get_corename() writes them (DYNAMIC_ARCH's x86-64 cores).
  static const std::vector<std::pair<std::vector<const char*>, int>> tiers = {
      {{"SkylakeX", "Cooperlake", "SapphireRapids"}, 4},
      {{"Haswell", "Zen", "Excavator"}, 3},
      {{"Sandybridge", "Bulldozer", "Piledriver", "Steamroller"}, 2},
      {{"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Opteron", "Opteron_SSE3", "Barcelona",
        "Bobcat", "Nano", "Katmai", "Coppermine", "Northwood", "Banias", "Athlon", "generic"},
       1},
  };
  for (const auto& [names, tier] : tiers) {
    for (const char* name : names) {
      if (strcasecmp(name, kernel.c_str()) == 0) return tier;
    }
  }
  return 0;
}

std::optional<std::string> better_openblas_kernel(const std::string& chosen, const CpuFeatures& cpu) {
  const int have = openblas_kernel_tier(chosen);
  if (chosen.empty() || have == 0) return std::nullopt;  // not OpenBLAS, or a kernel kd does not know
  const std::string best = best_openblas_kernel(cpu);
  if (openblas_kernel_tier(best) <= have) return std::nullopt;
  return best;
}

BlasInfo blas_info() {
  BlasInfo info;
  const auto config = openblas_symbol<char* (*)()>("openblas_get_config");
  const auto threads = openblas_symbol<int (*)()>("openblas_get_num_threads");
  if (config) {
    info.library = config();
    info.kernel = chosen_kernel();
    info.threads = threads ? threads() : 0;
  } else if (at::hasMKL()) {  // PyPI's LibTorch: MKL linked in, on LibTorch's intra-op threads
    info.library = at::get_mkl_version();
    info.library.erase(info.library.find_last_not_of(" \n") + 1);
    info.threads = at::get_num_threads();
  } else {
    info.library = "neither OpenBLAS nor MKL (another BLAS, or LibTorch's own kernels)";
  }
  return info;
}

std::optional<std::string> blas_restart_kernel(const BlasInfo& info, const CpuFeatures& cpu, const char* coretype) {
  if (coretype != nullptr) return std::nullopt;  // the user's or the machine's choice
  // Only an OpenBLAS built with DYNAMIC_ARCH chooses its kernels at run time.
  if (info.library.find("DYNAMIC_ARCH") == std::string::npos) return std::nullopt;
  return better_openblas_kernel(info.kernel, cpu);
}

void set_blas_restarted_from(std::string kernel) { restarted_from() = std::move(kernel); }

std::optional<std::string> blas_warning() {
  const BlasInfo info = blas_info();
  const auto better = better_openblas_kernel(info.kernel, cpu_features());
  if (!better) return std::nullopt;
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  std::string why;
  if (!restarted_from().empty()) {
    why = " (kd restarted itself with OPENBLAS_CORETYPE=" + std::string(set ? set : "") +
          ", which this OpenBLAS did not take)";
  } else if (set) {
    why = " (OPENBLAS_CORETYPE=" + std::string(set) + " is set; kd leaves it as it is)";
  }
  return "OpenBLAS runs its " + info.kernel + " kernels on a CPU that supports " + *better +
         "'s, which run matrix products several times faster" + why +
         ": start the program with OPENBLAS_CORETYPE=" + *better;
}

std::string describe_blas() {
  const BlasInfo info = blas_info();
  if (info.kernel.empty()) return info.library;
  std::string out = info.library + ", kernel " + info.kernel;
  if (!restarted_from().empty()) {
    const char* set = std::getenv("OPENBLAS_CORETYPE");
    out += " (kd restarted itself with OPENBLAS_CORETYPE=" + std::string(set ? set : "") + "; OpenBLAS had chosen " +
           restarted_from() + ")";
  }
  return out;
}

double measure_sgemm_gflops(int64_t n) {
  const at::Tensor a = at::rand({n, n}), b = at::rand({n, n});
  at::Tensor c = at::mm(a, b);  // warm-up: threads started, pages touched
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best =
        std::max(best, 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / seconds / 1e9);
  }
  return best;
}

}  // namespace kd::runtime
