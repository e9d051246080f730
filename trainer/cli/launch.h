// `kd launch`: starts N local ranks of a kd command with the torchrun variables set, the
// single-machine equivalent of `torchrun --standalone --nproc-per-node=N kd ...`.
//
//   kd launch --nproc=2 -- train --cfg=configs/fashion_mnist_mlp.yaml
//   kd launch --nnodes=2 --node-rank=0 --nproc=2 --master-addr=HOST0 --master-port=29500 -- train ...
//
// Several nodes (torchrun's --nnodes, --node-rank): one kd launch per node, the same
// --nnodes, --nproc, --master-addr (node 0's address) and --master-port on each.
//
// Every line a rank prints is forwarded with a "[rank R] " prefix (stdout to stdout, stderr to
// stderr). Each rank runs in its own process group with stdin from /dev/null, so a Ctrl-C
// reaches the launcher only, and gets SIGTERM if the launcher dies. SIGHUP to the launcher
// counts as SIGTERM. When a rank fails (non-zero exit or a signal), the others are sent SIGTERM, and
// SIGKILL after `grace`; SIGINT/SIGTERM to the launcher are passed on to every rank (a second
// one kills them). The launcher's exit code is the first failing rank's (128+N for signal N;
// when several fail between two looks, one killed by a signal is taken as the cause), or 0
// when every rank exited 0 (also after a SIGTERM they stopped cleanly on).
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace kd::cli {

struct LaunchOptions {
  int nproc = 1;                  // ranks on this node
  int nnodes = 1;                 // nodes of the job, each running its own kd launch
  int node_rank = 0;              // this node's place: ranks node_rank * nproc ... + nproc - 1
  std::string program;            // the kd binary to run (default: this executable)
  std::vector<std::string> args;  // its arguments, e.g. {"train", "--cfg=..."}
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: a free port
  std::chrono::milliseconds grace{30'000};
};

// Runs the ranks to completion; returns the exit code described above.
int launch(const LaunchOptions& options);

// The path of the running executable (kd's ranks and sweep points run it); kd::IOError when
// /proc/self/exe cannot be read.
std::string self_executable();

}  // namespace kd::cli
