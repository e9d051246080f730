// kd::train::DataParallel: what a run does differently when it is one rank of a data-parallel
// job, behind one interface. Alone (no torchrun variables), every operation is the identity and
// costs nothing; in a job, the ranks agree:
//   - the gradients are all-reduced after the backward pass, and with them two flags ("my loss is
//     not finite", "I was asked to stop") so that every rank skips, raises or stops together;
//   - rank 0's parameters, buffers and EMA reach every rank at the start and after a resume, its
//     buffers (BatchNorm statistics) after every step;
//   - states are merged over the ranks before they are logged or saved, and decisions that could
//     differ between ranks (which checkpoint, a new best) are rank 0's;
//   - every rank's random states are saved with rank 0's checkpoint, and ranks other than 0 draw
//     their own streams.
// See trainer/distributed/distributed.h for the job itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <c10/core/Device.h>

#include "trainer/context/auxiliaries_state.h"
#include "trainer/tree/tree.h"

namespace spdlog {
class logger;
}
namespace kd::distributed {
struct Options;
struct WorldInfo;
}  // namespace kd::distributed
namespace kd::models {
class Model;
}

namespace kd::train {

class TrainStep;

class DataParallel {
 public:
  // A rank of the job the torchrun variables describe (more than one rank), or this process
  // alone. Joins nothing yet (see join).
  static std::unique_ptr<DataParallel> from_environment();
  virtual ~DataParallel() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // The ranks of this machine, which share its cores (and GPUs).
  virtual int local_world_size() const = 0;
  // Rank 0: the one that writes logs, metrics and checkpoints, and decides for the job.
  bool is_chief() const { return rank() == 0; }
  // The GPU of this rank when the experiment says `device: cuda` and the machine has several
  // (cuda:LOCAL_RANK); `device` itself otherwise. `where` locates the key in errors.
  virtual c10::Device rank_device(const c10::Device& device, const std::string& where) const = 0;

  // Joins the job (rendezvous, process group) and hooks the gradient all-reduce into `step`,
  // whose model's tensors it broadcasts from then on. `global_batch` is for the log line.
  virtual void join(const distributed::Options& options, const c10::Device& device, TrainStep& step,
                    int64_t global_batch, spdlog::logger& log) = 0;

  // Rank 0's parameters, buffers and EMA to every rank.
  virtual void broadcast_parameters() = 0;
  // Rank 0's buffers to every rank (after each step).
  virtual void broadcast_buffers() = 0;
  // Rank 0's `value` on every rank, for decisions the ranks must share.
  virtual int64_t rank0_value(int64_t value, const std::string& what) = 0;
  // The states of every rank merged in rank order; `auxiliaries` own them.
  virtual AuxiliariesState merge(const AuxiliariesState& state, const std::shared_ptr<const Auxiliaries>& auxiliaries,
                                 const std::string& what) = 0;
  // Whether to stop after this step: alone, `signalled` (this process's stop signal); in a job,
  // whether any rank was signalled, as agreed during the last step.
  virtual bool stop_requested(bool signalled) const = 0;
  // Asks to stop (a callback, stop_after_time): alone at once, in a job with the step after
  // (the request travels with the next step's flags, so every rank stops at the same step).
  void request_stop() { stop_asked_ = true; }

  // Every rank's random states (CPU and the training device) as a list in rank order, for rank
  // 0's checkpoint; none when alone.
  virtual Tree gather_random_states(const c10::Device& device, const std::string& what) = 0;
  // After a resume: this rank's states from `saved` (gather_random_states of the job that saved
  // it), or a stream of its own when the job had another number of ranks; alone, nothing.
  virtual void restore_random_states(const Tree* saved, int64_t seed, int64_t step) = 0;
  // Ranks other than 0 get their own random streams (dropout masks differ); rank 0 keeps the
  // experiment's. Alone, nothing.
  virtual void seed_rank(int64_t seed, int64_t step) = 0;

 protected:
  bool stop_asked_ = false;  // request_stop()
};

}  // namespace kd::train
