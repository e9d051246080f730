// kd::distributed: data-parallel training on PyTorch's own distributed engine (c10d).
//
// A job is N processes ("ranks") started by `torchrun`, SLURM `srun`, a Kubernetes PyTorchJob or
// `kd launch --nproc=N`; each reads its place from the torchrun variables (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and meets the others through a c10d
// TCPStore on MASTER_ADDR:MASTER_PORT (rank 0 serves it, or torchrun's agent when it sets
// TORCHELASTIC_USE_AGENT_STORE=True). Collectives run on Gloo (CPU) or
// NCCL (CUDA, where LibTorch was built with it).
//
//   auto world = kd::distributed::world_from_environment();        // nullopt: one process
//   auto group = kd::distributed::ProcessGroup::create(*world, options, device);
//   kd::distributed::GradientReducer reducer(group, model.parameters(), options.bucket_bytes);
//   ... loss.backward(); reducer.reduce({}); optimizer.step();      // gradients averaged
//
// The experiment's optional `distributed:` section holds the options:
//
//   distributed:
//     backend: auto      # auto (nccl on CUDA where built, else gloo), gloo or nccl
//     timeout_s: 300     # a rank that does not answer a collective for this long fails the job
//     bucket_mb: 25      # gradients are all-reduced in buckets of about this size
//
// Every failure of a peer (it died, hung past timeout_s, or never joined) is raised as
// kd::DistributedError naming this rank, the operation and the timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <torch/types.h>

#include "trainer/tree/tree.h"

namespace kd::config {
class Node;
}

namespace kd::distributed {

// A loopback TCP port the kernel says is free now (the usual way launchers pick a rendezvous
// port; the rendezvous binds it moments later).
int free_port();

// This process's place in the job.
struct WorldInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "torchrun's variables";  // where it was read, for the run's log
};

// From the torchrun variables (RANK, WORLD_SIZE, ...), or, where WORLD_SIZE is unset, from SLURM's
// (world_from_slurm); nullopt for a single process. A variable that is set but malformed (RANK=x,
// RANK >= WORLD_SIZE, no MASTER_ADDR) is a kd::ConfigError naming it.
std::optional<WorldInfo> world_from_environment();

// From an `srun` step's variables: rank SLURM_PROCID of SLURM_STEP_NUM_TASKS (else SLURM_NTASKS),
// local rank SLURM_LOCALID, the local task count from SLURM_STEP_TASKS_PER_NODE and SLURM_NODEID,
// the rendezvous on the first host of SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST) unless
// MASTER_ADDR is set, at MASTER_PORT or 15000 + the last four digits of SLURM_JOB_ID (Lightning's
// port, the same on every node). nullopt outside SLURM or for a single task.
std::optional<WorldInfo> world_from_slurm();

// SLURM's compressed host list expanded in order, at most `limit` hosts:
// "node[01-03,07],gpu-a" -> node01, node02, node03, node07, gpu-a; "r[1-2]-n[1-2]" -> r1-n1,
// r1-n2, r2-n1, r2-n2. kd::ConfigError for an unbalanced bracket or a range that is not N-M.
std::vector<std::string> expand_hostlist(const std::string& list, std::size_t limit = SIZE_MAX);

struct Options {
  std::string backend = "auto";
  std::chrono::milliseconds timeout{300'000};
  int64_t bucket_bytes = 25 << 20;

  // The experiment's `distributed:` section (config::Node::section).
  static Options from_config(const config::Node& node);
};

// A c10d process group (Gloo or NCCL) with kd's error handling: every collective waits at most
// the timeout and turns a peer's failure into kd::DistributedError. Collectives must be called
// by every rank in the same order.
class ProcessGroup {
 public:
  // Joins the job: rendezvous through the TCPStore (rank 0 serves it), then the backend's
  // connections. Throws kd::DistributedError when the others do not arrive within the timeout.
  static std::shared_ptr<ProcessGroup> create(const WorldInfo& world, const Options& options,
                                              const c10::Device& device);
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;
  // Where the tensors of its collectives live: the CPU for Gloo, this rank's GPU for NCCL.
  virtual c10::Device device() const = 0;
  virtual int size() const = 0;
  virtual const std::string& backend() const = 0;
  virtual std::chrono::milliseconds timeout() const = 0;

  // Sums `tensors` over the ranks in place; every rank passes tensors of the same shapes.
  // The tensors are all-reduced concurrently (one operation each) and waited for together.
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors, const std::string& what) = 0;
  // Replaces `tensors` with rank `root`'s, in place.
  virtual void broadcast(std::vector<torch::Tensor>& tensors, int root, const std::string& what) = 0;
  // Every rank's `bytes`, in rank order (lengths may differ).
  virtual std::vector<std::string> all_gather_bytes(const std::string& bytes, const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;
};

// Averages the gradients of `params` over the ranks: they are packed into buckets of about
// `bucket_bytes` (one per dtype and device at least), every bucket is all-reduced concurrently,
// and the averages are written back. A parameter without a gradient on this rank counts as zero,
// and has a gradient afterwards (so every rank's optimizer sees the same gradients).
class GradientReducer {
 public:
  GradientReducer(std::shared_ptr<ProcessGroup> group, std::vector<torch::Tensor> params, int64_t bucket_bytes);
  ~GradientReducer();

  // All-reduces the gradients and, in the same round, `flags` (summed, e.g. "this rank saw a
  // NaN", "this rank was asked to stop"); returns the summed flags.
  std::vector<double> reduce(const std::vector<double>& flags);

  int64_t num_buckets() const;
  int64_t num_elements() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Tree <-> bytes for exchanging states between ranks: tensors (moved to the CPU), ints, floats,
// strings, dicts and lists. Not a file format: both sides are the same build.
std::string tree_to_bytes(const Tree& tree);
Tree tree_from_bytes(const std::string& bytes);

// Every rank's tree, in rank order.
std::vector<Tree> all_gather_trees(ProcessGroup& group, const Tree& tree, const std::string& what);

}  // namespace kd::distributed
