// The `kd` command line; its commands live in the library (trainer/cli/cli.h), so that a program
// with components of its own has them too.
#include "trainer/cli/cli.h"

int main(int argc, char** argv) { return kd::cli::run(argc, argv); }
