// kd::checkpoints::Checkpointer: atomic checkpoints of the whole training state under
// WORKDIR/checkpoints/ckpt_<step>/ (names follow Kauldron's kd.ckpts.Checkpointer):
//
//   checkpointer:
//     save_interval_steps: 1000   # the default; also always at the end of training and on signals
//     max_to_keep: 3              # the newest N
//     keep_period: 5000           # also keep every checkpoint whose step is a multiple of this
//     best_metric_path: test/metrics/accuracy   # also keep the best one by an eval metric
//     best_mode: max              # or min; the default is min for losses/..., required otherwise
//
// A checkpoint is written into a temporary directory (files fsync'ed), then renamed into place;
// MANIFEST.json, written last, records each file's size and XXH64 checksum. Older checkpoints
// are pruned only after the new one is complete, so a crash, a full disk or an I/O error never
// costs a good checkpoint. A checkpoint that fails its manifest is reported and skipped.
#pragma once

#include "trainer/common/torch_fwd.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "trainer/data/pipeline.h"
#include "trainer/io/file_system.h"
#include "trainer/tree/tree.h"

namespace kd::config {
class Node;
}

namespace kd::checkpoints {

struct CheckpointerOptions {
  int64_t save_interval_steps = 1000;  // 0: only at the end of training (and on signals)
  int64_t max_to_keep = 3;
  int64_t keep_period = 0;       // 0: off
  std::string best_metric_path;  // "<collection>/<metric>", e.g. "test/metrics/accuracy"
  bool best_is_max = true;

  // From the experiment's `checkpointer:` section (config::Node::section).
  static CheckpointerOptions from_config(const config::Node& node);
};

// Whether a logged value `metric` ("test/metrics/accuracy") is better larger, from `node`'s
// `key` (max or min): absent, min for a loss ("<eval>/losses/..."), and a ConfigError asking
// for it otherwise (an accuracy is maximized, an error rate minimized: kd does not guess).
bool read_metric_mode(const config::Node& node, const char* key, const std::string& metric);

// The training state a checkpoint holds. For save, every pointer and tree is read; for
// restore, the module's parameters and buffers and the optimizer's state take the checkpoint's
// values (the same tensor objects, whose storage becomes the memory the checkpoint was read into
// when on the same device, with no copy; copied otherwise), `ema`'s tensors are overwritten in
// place, and the other fields are filled.
struct Snapshot {
  int64_t step = 0;
  torch::nn::Module* model = nullptr;            // params and buffers (collections)
  torch::optim::Optimizer* optimizer = nullptr;  // per-parameter state and hyper-parameters
  Tree ema;                                      // EMA of params, or none
  data::PipelineState data;                      // the data iterator's position
  Tree aux;                                      // auxiliary states merged since the last log
  int64_t aux_steps = 0;                         // steps merged into `aux`
  std::string config_yaml;                       // the resolved experiment
  // Random number generators (torch's CPU generator and every CUDA one) are saved and
  // restored by the checkpointer itself.
};

// What probing a checkpoint directory found.
struct CheckpointInfo {
  int64_t step = 0;
  std::string path;
  std::string problem;  // empty when valid
  bool valid() const { return problem.empty(); }
};

class Checkpointer {
 public:
  Checkpointer(std::string directory, CheckpointerOptions options,
               std::shared_ptr<io::FileSystem> fs = io::posix_file_system());

  const std::string& directory() const { return directory_; }
  const CheckpointerOptions& options() const { return options_; }
  bool should_save(int64_t step) const;

  // Writes ckpt_<step> atomically and then prunes. Returns the checkpoint's path. On failure,
  // throws kd::IOError and leaves every earlier checkpoint as it was.
  std::string save(const Snapshot& snapshot);

  // Every ckpt_<step> directory, newest first, each checked against its manifest.
  std::vector<CheckpointInfo> probe() const;
  // probe()'s, of the checkpoints after `step` only (the others are not read).
  std::vector<CheckpointInfo> probe_after(int64_t step) const;
  // The newest valid checkpoint, or nullopt.
  std::optional<CheckpointInfo> latest_valid() const;

  // The one rule for choosing a checkpoint (resume, kd eval, kd export, init_transform): among
  // `probed` (probe()'s list), the checkpoint of `step`, handed to `use` whatever its state (so
  // that `use` says what is wrong with it: its errors propagate); or, without a step, the newest
  // that `use` accepts: one that is damaged, or that `use` rejects with kd::CorruptionError, is
  // reported to `skip` with the reason and the one before it is tried. Returns the checkpoint
  // used, or nullopt when there is none of `step` / none that `use` accepts.
  using Use = std::function<void(const CheckpointInfo& info)>;
  using Skip = std::function<void(const CheckpointInfo& info, const std::string& why)>;
  static std::optional<CheckpointInfo> choose(const std::vector<CheckpointInfo>& probed, std::optional<int64_t> step,
                                              const Use& use, const Skip& skip = {});
  // The same rule over this checkpointer's directory, for a reader beside a run that writes it
  // (kd eval, kd export, init_transform, kd report): a checkpoint that disappears while it is
  // read was pruned by the run (max_to_keep), not damaged: it is neither used nor reported to
  // `skip`, and the directory is listed again for the newest one. The checkpoint of `step` gone
  // that way is a kd::ConfigError saying so.
  std::optional<CheckpointInfo> choose(std::optional<int64_t> step, const Use& use, const Skip& skip = {}) const;

  // Restores `path` into `snapshot` (see Snapshot). Throws kd::MismatchError when the intact
  // checkpoint does not fit the model (names or shapes), kd::CorruptionError when it cannot be
  // parsed.
  void restore(const std::string& path, Snapshot& snapshot) const;

  // Feeds an eval's values; remembers the best step by best_metric_path (kept from pruning).
  // Returns true when `step` is a new best: the caller then saves it and calls write_best().
  bool track_best(int64_t step, const std::string& collection,
                  const std::vector<std::pair<std::string, double>>& values);
  std::optional<int64_t> best_step() const { return best_step_; }
  // Records the best step in best.json (after its checkpoint is saved).
  void write_best();

  // Renames the checkpoint at `path` to "damaged.ckpt_<step>[.N]" in the same directory: kept
  // for inspection, but no longer a checkpoint (resume skips it, and the pruning of newer
  // saves, which keeps the highest steps, no longer counts it). Returns the new path.
  std::string set_aside(const std::string& path);

  // Removes what a killed save left behind (a temporary directory, or a checkpoint moved aside
  // while being re-saved, which is moved back). Call only while no other save runs.
  void clean_up_interrupted_saves();

 private:
  void prune();

  std::string directory_;
  CheckpointerOptions options_;
  std::shared_ptr<io::FileSystem> fs_;
  std::optional<int64_t> best_step_;
  double best_value_ = 0;
};

// The tensors of one group of a checkpoint ("params", "collections", or "ema": the EMA of the
// params, named as they are), by dotted name, in the model's order, without building a model
// (for export). Throws kd::CorruptionError, or kd::ConfigError for "ema" when the run kept none.
std::vector<std::pair<std::string, torch::Tensor>> read_checkpoint_tensors(const std::string& path,
                                                                           const std::string& group);

// Loads the optimizer state of the checkpoint at `path` into `optimizer` (whose parameters are
// `model`'s), as init_transform's opt_state does. Throws kd::CorruptionError or kd::ConfigError.
void read_checkpoint_optimizer_state(const std::string& path, torch::optim::Optimizer& optimizer,
                                     const torch::nn::Module& model);

// Verifies a checkpoint directory against its manifest; the problem, or "" when valid.
std::string verify_checkpoint(io::FileSystem& fs, const std::string& path);

}  // namespace kd::checkpoints
