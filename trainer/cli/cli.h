// kd::cli: the `kd` command line as a library call. A program that registers components of its
// own gets every kd command (train, eval, export, inspect, configs, launch, report) with them:
//
//   #include "trainer/kd.h"
//   int main(int argc, char** argv) {
//     kd::models::registry().add<MyModel>("MyModel", "width=64");
//     return kd::cli::run(argc, argv, {.name = "my_trainer"});
//   }
//
//   $ my_trainer train --cfg=exp.yaml --cfg.model.width=128
//
// run() returns the process's exit code: 0, 2 for a mistake in the input (printed as one
// "NAME: error: ..." line on stderr, the fix named), 1 for anything else.
#pragma once

#include <memory>
#include <string>

namespace spdlog {
class logger;
}  // namespace spdlog

namespace kd::cli {

struct Options {
  // The program's name in its help and its error lines.
  std::string name = "kd";
  // Where train, eval and inspect log (Trainer's `log`); by default stderr, with a progress bar
  // on a terminal. WORKDIR/log.txt keeps the lines either way.
  std::shared_ptr<spdlog::logger> log;
};

int run(int argc, char** argv, const Options& options = {});

// Ends the process with `code`, as `kd`'s main does after run(): flushes C's and C++'s standard
// streams and the loggers registered with spdlog, then leaves without the static destructors of
// the ~300 shared libraries a LibTorch process loads (Debian's pulls in OpenCV, FFmpeg, Qt...).
// Those destructors free nothing the system would not, yet page in several MB of the libraries'
// code, the process's peak RSS, and take milliseconds. Call it only once everything of yours
// that writes is closed or flushed (a logger given as Options::log is not spdlog's to flush). In
// a build with a sanitizer, coverage or profile runtime it is std::exit, whose work they need.
[[noreturn]] void end_process(int code);

// "kd 0.1.0 (LibTorch 2.5.1, CUDA)": what `kd --version` prints.
std::string version();

}  // namespace kd::cli
