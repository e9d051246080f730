// The `kd` command line; its commands live in the library (trainer/cli/cli.h), so that a program
// with components of its own has them too.
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "trainer/cli/cli.h"
#include "trainer/runtime/blas.h"

namespace {

// Set in the environment of a kd started again for its BLAS (to the kernel OpenBLAS had chosen),
// so that it never starts again twice; read and removed by the new process, so that its own
// children (kd launch's ranks) do not take it for theirs.
constexpr const char* kRestartGuard = "KD_BLAS_REEXEC";

// OpenBLAS chose its kernels when the process loaded: when they are narrower than the CPU's (and
// OPENBLAS_CORETYPE is unset), kd starts again (/proc/self/exe, the same arguments and
// environment) with OPENBLAS_CORETYPE set to the CPU's best. Returns when nothing is to be done,
// in the new process, or when starting again failed (the run's header then warns, naming the fix).
void restart_for_better_blas(char** argv) {
  if (const char* first = std::getenv(kRestartGuard)) {
    kd::runtime::set_blas_restarted_from(first);
    unsetenv(kRestartGuard);
    return;
  }
  const kd::runtime::BlasInfo info = kd::runtime::blas_info();
  const auto kernel =
      kd::runtime::blas_restart_kernel(info, kd::runtime::cpu_features(), std::getenv("OPENBLAS_CORETYPE"));
  if (!kernel) return;
  setenv("OPENBLAS_CORETYPE", kernel->c_str(), 1);
  setenv(kRestartGuard, info.kernel.c_str(), 1);
  execv("/proc/self/exe", argv);
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv(kRestartGuard);
}

}  // namespace

// The process ends without the shared libraries' static destructors (kd::cli::end_process).
int main(int argc, char** argv) {
  restart_for_better_blas(argv);
  kd::cli::end_process(kd::cli::run(argc, argv));
}
