// kd::train::Auxiliary: the base of losses, metrics and summaries. An auxiliary names its
// inputs as path keys into the Context; each key has a default that YAML may override:
//
//   class MyLoss : public kd::losses::Loss {
//    public:
//     explicit MyLoss(const kd::config::Node& o)
//         : Loss(o), preds_(key(o, "preds", "preds.logits")), targets_(key(o, "targets")) {}
//     torch::Tensor values(const kd::train::Context& ctx) const override {
//       return (read(ctx, preds_) - read(ctx, targets_)).abs();
//     }
//    private:
//     kd::Path preds_, targets_;
//   };
//
// Declaring keys through `key` lets the step know every path an auxiliary reads before the
// first step, so it can skip stages nothing reads and check the paths once.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "trainer/config/node.h"
#include "trainer/tree/path.h"
#include "trainer/tree/tree.h"

namespace kd::train {

struct Context;

class Auxiliary {
 public:
  virtual ~Auxiliary() = default;

  // Every key this auxiliary reads, as (key name, path), in declaration order.
  const std::vector<std::pair<std::string, Path>>& keys() const { return keys_; }

  // The tensor at `path` in the context; kd::KeyError / kd::TypeError name the path.
  static torch::Tensor read(const Context& ctx, const Path& path);
  // The mask at `path` as a float tensor of `like`'s shape. A mask may be per example ([B], or
  // [B, 1] as Kauldron's per-example values are) or per element; trailing axes of size 1 that
  // `like` lacks are dropped, missing trailing axes are broadcast. kd::TypeError otherwise.
  static torch::Tensor read_mask(const Context& ctx, const Path& path, const torch::Tensor& like);
  // Throws kd::TypeError when an integer label at `path` lies outside [0, classes) and is not
  // `ignore` (PyTorch's cross-entropy skips -100 silently; kd names it). Checked where the
  // labels are on the CPU (on an accelerator it would wait for the device every step; the
  // sources check their labels as they load them).
  static void check_class_indices(const torch::Tensor& labels, int64_t classes, std::optional<int64_t> ignore,
                                  const Path& path);

 protected:
  // The path of key `name`: options[name] when given, else `default_path`; a key without a
  // default is required. Throws kd::ConfigError (missing key) or kd::PathSyntaxError.
  Path key(const config::Node& options, const std::string& name, const std::string& default_path = "");
  // A key that may be left out (e.g. `mask`).
  std::optional<Path> optional_key(const config::Node& options, const std::string& name);
  // Records a key that was built some other way (e.g. by a wrapper for its inner metric).
  void add_key(const std::string& name, const Path& path) { keys_.emplace_back(name, path); }

 private:
  std::vector<std::pair<std::string, Path>> keys_;
};

}  // namespace kd::train
