// The `kd` command line; its commands live in the library (trainer/cli/cli.h), so that a program
// with components of its own has them too.
#include "trainer/cli/cli.h"

// The process ends without the shared libraries' static destructors (kd::cli::end_process).
int main(int argc, char** argv) { kd::cli::end_process(kd::cli::run(argc, argv)); }
