#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <catch2/catch.hpp>

#include "trainer/runtime/blas.h"

using kd::runtime::CpuFeatures;

namespace {

CpuFeatures sse3() {
  CpuFeatures f;
  f.sse3 = true;
  return f;
}
CpuFeatures sse4() {
  CpuFeatures f = sse3();
  f.sse4_2 = true;
  return f;
}
CpuFeatures avx() {
  CpuFeatures f = sse4();
  f.avx = true;
  return f;
}
CpuFeatures avx2() {
  CpuFeatures f = avx();
  f.avx2 = f.fma = true;
  return f;
}
CpuFeatures avx512() {
  CpuFeatures f = avx2();
  f.avx512f = f.avx512dq = f.avx512cd = f.avx512bw = f.avx512vl = true;
  return f;
}

}  // namespace

TEST_CASE("the best OpenBLAS kernel for a CPU's features") {
  CHECK(kd::runtime::best_openblas_kernel(CpuFeatures{}) == "Prescott");
  CHECK(kd::runtime::best_openblas_kernel(sse3()) == "Prescott");
  CHECK(kd::runtime::best_openblas_kernel(sse4()) == "Nehalem");
  CHECK(kd::runtime::best_openblas_kernel(avx()) == "Sandybridge");
  CHECK(kd::runtime::best_openblas_kernel(avx2()) == "Haswell");
  CpuFeatures zen = avx2();
  zen.amd = true;
  CHECK(kd::runtime::best_openblas_kernel(zen) == "Zen");
  CpuFeatures fma_less = avx2();
  fma_less.fma = false;  // AVX2 without FMA: Haswell's kernels need both
  CHECK(kd::runtime::best_openblas_kernel(fma_less) == "Sandybridge");
  CHECK(kd::runtime::best_openblas_kernel(avx512()) == "SkylakeX");
  CpuFeatures cooperlake = avx512();
  cooperlake.avx512_bf16 = true;
  CHECK(kd::runtime::best_openblas_kernel(cooperlake) == "Cooperlake");
  CpuFeatures zen4 = cooperlake;
  zen4.amd = true;
  CHECK(kd::runtime::best_openblas_kernel(zen4) == "Cooperlake");
  CpuFeatures partial = avx512();
  partial.avx512bw = false;  // Knights Landing's AVX-512 lacks BW and VL: SkylakeX's kernels need them
  CHECK(kd::runtime::best_openblas_kernel(partial) == "Haswell");
}

TEST_CASE("kernels are compared by the instructions they use") {
  CHECK(kd::runtime::openblas_kernel_tier("Prescott") == 1);
  CHECK(kd::runtime::openblas_kernel_tier("NEHALEM") == 1);
  CHECK(kd::runtime::openblas_kernel_tier("Sandybridge") == 2);
  CHECK(kd::runtime::openblas_kernel_tier("Piledriver") == 2);  // AVX and FMA4/FMA3, no AVX2
  CHECK(kd::runtime::openblas_kernel_tier("Excavator") == 3);
  CHECK(kd::runtime::openblas_kernel_tier("Haswell") == 3);
  CHECK(kd::runtime::openblas_kernel_tier("Zen") == 3);
  CHECK(kd::runtime::openblas_kernel_tier("SkylakeX") == 4);
  CHECK(kd::runtime::openblas_kernel_tier("Cooperlake") == 4);
  CHECK(kd::runtime::openblas_kernel_tier("ARMV8") == 0);
  CHECK(kd::runtime::openblas_kernel_tier("") == 0);
}

TEST_CASE("a better kernel is proposed only when the chosen one is of a lower tier than the CPU's") {
  CpuFeatures cooperlake = avx512();
  cooperlake.avx512_bf16 = true;
  // The case seen in the field: Debian's OpenBLAS 0.3.21 takes an unknown AVX-512 CPU for Prescott.
  CHECK(kd::runtime::better_openblas_kernel("Prescott", cooperlake) == "Cooperlake");
  CHECK(kd::runtime::better_openblas_kernel("Haswell", avx512()) == "SkylakeX");
  CHECK(kd::runtime::better_openblas_kernel("Sandybridge", avx2()) == "Haswell");
  // The same tier: no restart for the same speed.
  CHECK(!kd::runtime::better_openblas_kernel("SkylakeX", cooperlake));
  CHECK(!kd::runtime::better_openblas_kernel("Haswell", avx2()));
  CHECK(!kd::runtime::better_openblas_kernel("Sandybridge", avx()));
  // Above the CPU (a value someone set): left alone.
  CHECK(!kd::runtime::better_openblas_kernel("SkylakeX", avx2()));
  // Not OpenBLAS, or a kernel kd does not know (another architecture): nothing.
  CHECK(!kd::runtime::better_openblas_kernel("", cooperlake));
  CHECK(!kd::runtime::better_openblas_kernel("NEOVERSEN1", cooperlake));
}

TEST_CASE("the kd binary starts again only for a DYNAMIC_ARCH OpenBLAS below the CPU, never over OPENBLAS_CORETYPE") {
  const kd::runtime::BlasInfo prescott{.library = "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64",
                                       .kernel = "Prescott",
                                       .threads = 2};
  // The case seen in the field: an AVX-512 CPU taken for an SSE3 one.
  CHECK(kd::runtime::blas_restart_kernel(prescott, avx512(), nullptr) == "SkylakeX");
  CHECK(kd::runtime::blas_restart_kernel(prescott, avx2(), nullptr) == "Haswell");
  // A value the user or the machine set is kept, even an empty or a worse one.
  CHECK(!kd::runtime::blas_restart_kernel(prescott, avx512(), "Prescott"));
  CHECK(!kd::runtime::blas_restart_kernel(prescott, avx512(), ""));
  // Kernels of the CPU's tier: nothing to do.
  kd::runtime::BlasInfo haswell = prescott;
  haswell.kernel = "Haswell";
  CHECK(!kd::runtime::blas_restart_kernel(haswell, avx2(), nullptr));
  // An OpenBLAS built for one architecture chooses nothing at run time; MKL has no kernel to choose.
  kd::runtime::BlasInfo fixed = prescott;
  fixed.library = "OpenBLAS 0.3.21 NO_AFFINITY Prescott MAX_THREADS=64";
  CHECK(!kd::runtime::blas_restart_kernel(fixed, avx512(), nullptr));
  const kd::runtime::BlasInfo mkl{.library = "Intel(R) oneAPI Math Kernel Library Version 2024.2", .threads = 2};
  CHECK(!kd::runtime::blas_restart_kernel(mkl, avx512(), nullptr));
}

TEST_CASE("this process's BLAS is described") {
  const auto info = kd::runtime::blas_info();
  CHECK(!info.library.empty());
  if (!info.kernel.empty()) {
    CHECK(info.library.rfind("OpenBLAS", 0) == 0);
    CHECK(info.threads >= 1);
    CHECK_THAT(kd::runtime::describe_blas(), Catch::Contains("kernel " + info.kernel));
  } else if (at::hasMKL()) {  // PyPI's LibTorch
    // MKL's own version string (mkl_get_version_string), named as Intel documents it.
    CHECK_THAT(info.library, Catch::Contains("Math Kernel Library"));
    CHECK(info.threads == at::get_num_threads());
    CHECK(kd::runtime::describe_blas() == info.library);
  } else {
    CHECK_THAT(info.library, Catch::StartsWith("neither OpenBLAS nor MKL"));
  }
}
