// kd::train::TrainStep: one training step, filling the Context stage by stage (Kauldron's
// train_step.py):
//
//   Context::from_state_and_batch -> model forward (preds, interms, collections)
//     -> losses (loss_states, loss_total) -> backward (grads)
//     -> optimizer step (updates; opt_state as it was before the update)
//     -> metrics and summaries (metric_states, summary_states)
//
// Stages nothing reads cost nothing: interms are recorded, grads / updates / opt_state /
// pre-update params are kept only when some loss, metric or summary reads them.
//
//   TrainStep step(model, optimizer_options, auxiliaries);
//   TrainState state = step.init();
//   for (...) { auto [next, aux] = step.step(state, batch); state = next; merged = merge(merged, aux); }
//
// In LibTorch the parameters live in the module, so a step updates the tensors of `state`
// in place and returns a state that shares them.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "trainer/config/node.h"
#include "trainer/context/context.h"
#include "trainer/context/train_state.h"
#include "trainer/models/model.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/step/precision.h"

namespace kd::optim {
class Optimizer;
}

namespace kd::train {

// The model forward: resolves the model's input keys in `ctx` and fills preds, interms (when
// `record_interms`) and collections. Under `autocast` (bf16, fp16) the model runs in the low
// precision and its preds and interms are cast back to float32.
Context forward(models::Model& model, const Context& ctx, bool record_interms, const Autocast& autocast = {});

// forward, then every loss (in float32): fills loss_states and loss_total (a scalar tensor,
// with grad).
Context forward_with_loss(models::Model& model, const Auxiliaries& aux, const Context& ctx, bool record_interms,
                          const Autocast& autocast = {});

// What a step does when its loss is NaN or infinite.
enum class NanPolicy {
  kIgnore,    // apply the update anyway
  kRaise,     // throw kd::NonFiniteError naming the step, the loss and the first bad gradient
  kSkipStep,  // no update (the step still counts; BatchNorm statistics of its forward remain)
};
// The one default, for TrainStep and for YAML's `nan_policy`.
inline constexpr NanPolicy kDefaultNanPolicy = NanPolicy::kRaise;
NanPolicy parse_nan_policy(const config::Node& experiment);  // key `nan_policy`: raise | skip_step | ignore

// What one call of TrainStep::step does besides the update.
struct StepOptions {
  // Receives the Context after every stage (of the last micro-batch), e.g. for `kd inspect`.
  Context* context_out = nullptr;
  // Summaries run only when set (the trainer asks on the steps it records them).
  bool with_summaries = true;
};

class TrainStep {
 public:
  TrainStep(models::ModelPtr model, const config::Node& optimizer_options,
            std::shared_ptr<const Auxiliaries> auxiliaries);
  ~TrainStep();

  // Step 0: the model's parameters and buffers, and the (empty) optimizer state.
  TrainState init();

  // One optimizer update from `batch` (split into micro-batches when the optimizer
  // accumulates gradients). REQUIRES: `state` came from init() or step() of this object.
  // The returned state's opt_state is refreshed when an auxiliary reads opt_state or the
  // optimizer created new per-parameter state; its tensors are always the live ones.
  std::pair<TrainState, AuxiliariesState> step(const TrainState& state, const Tree& batch,
                                               const StepOptions& options = {});

  // Losses, metrics and summaries of `batch` in eval mode: no backward, no update.
  // `eval_aux` defaults to the training auxiliaries.
  AuxiliariesState eval_step(const TrainState& state, const Tree& batch,
                             const std::shared_ptr<const Auxiliaries>& eval_aux = nullptr);
  // The Context after the forward pass in eval mode, without gradients (kd predict); interms
  // recorded when `record_interms`.
  Context predict_step(const TrainState& state, const Tree& batch, bool record_interms);

  models::Model& model() { return *model_; }
  optim::Optimizer& optimizer() { return *optimizer_; }
  const std::shared_ptr<const Auxiliaries>& auxiliaries() const { return auxiliaries_; }

  // Which optional stages run (decided once from the auxiliaries' paths).
  struct Reads {
    bool interms = false;
    bool grads = false;
    bool updates = false;
    bool opt_state = false;
    bool params_after_update = false;  // metrics/summaries read params: keep pre-update values
  };
  const Reads& reads() const { return reads_; }

  void set_nan_policy(NanPolicy policy) { nan_policy_ = policy; }

  // The forward passes (training and evals) run under `autocast`; the default is float32.
  void set_autocast(const Autocast& autocast) { autocast_ = autocast; }
  const Autocast& autocast() const { return autocast_; }
  // Loss scaling (fp16): the loss is scaled for backward, the gradients unscaled after the
  // gradient hook, and a step whose gradients overflowed is skipped (counted by
  // grad_scaler_skipped_steps(), not by skipped_steps()). Works at any precision.
  void set_grad_scaler(const GradScalerOptions& options) { scaler_.emplace(options); }
  GradScaler* grad_scaler() { return scaler_ ? &*scaler_ : nullptr; }
  int64_t grad_scaler_skipped_steps() const { return scaler_skipped_steps_; }

  // When NanPolicy::kRaise reads the loss. Reading it on the host every step makes an
  // accelerator wait for the step to finish (a sync that empties its queue of work), so there
  // the loss is checked on the device and the result read only by check_deferred_non_finite()
  // (the trainer calls it at logged steps and before every checkpoint): the error then names the
  // first step whose loss was not finite, and the steps after it ran with its non-finite update.
  // kSkipStep must decide before the update and reads the loss every step everywhere.
  enum class NanCheck {
    kAuto,  // deferred on an accelerator, every step on the CPU (where reading costs nothing)
    kEveryStep,
    kDeferred,
  };
  void set_nan_check(NanCheck check) { nan_check_ = check; }
  // Throws kd::NonFiniteError when a deferred check found a non-finite loss; a no-op otherwise.
  void check_deferred_non_finite();

  // Runs after the backward pass(es) and before the NaN check and the optimizer step, e.g. to
  // average the gradients over processes (kd::distributed::GradientReducer). It is given
  // whether this process's loss is non-finite (always false under NanPolicy::kIgnore) and
  // returns whether any process's is, so that every process takes the same decision.
  using GradientHook = std::function<bool(bool non_finite)>;
  void set_gradient_hook(GradientHook hook) { gradient_hook_ = std::move(hook); }
  // Steps skipped by NanPolicy::kSkipStep so far.
  int64_t skipped_steps() const { return skipped_steps_; }

 private:
  // The stages of step(), in the order they fill the Context.
  // What the auxiliaries may read of the state before the update (copies only where read).
  TrainState state_before_update(const TrainState& state) const;
  // Forward, losses and backward of every micro-batch; their Contexts.
  std::vector<Context> forward_and_backward(const TrainState& state, const Tree& batch);
  // Applies the NaN policy (after the gradient hook): true when the update is to be skipped;
  // throws kd::NonFiniteError under kRaise.
  bool skip_non_finite(const TrainState& state, const std::vector<Context>& contexts);
  Tree copy_grads() const;
  Tree updates_since(const TrainState& before) const;
  // The state after the update: the live tensors, and the optimizer state tree when refreshed.
  TrainState next_state(const TrainState& state);
  // Metrics and summaries of every micro-batch, their states merged.
  AuxiliariesState aux_states(std::vector<Context>& contexts, const TrainState& before, const Tree& grads,
                              const Tree& updates, bool with_summaries) const;
  Context fill_metrics_and_summaries(const Auxiliaries& aux, const Context& ctx, bool with_summaries) const;
  // "losses/xent = nan; first non-finite gradient: grads.layers.0.weight".
  std::string describe_non_finite(const Context& ctx) const;

  models::ModelPtr model_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::shared_ptr<const Auxiliaries> auxiliaries_;
  Reads reads_;
  Tree params_;       // built once; shares the module's tensors
  Tree collections_;  // idem for buffers
  Tree opt_state_;    // rebuilt only when read or when the optimizer's state set grows
  std::size_t opt_state_entries_ = 0;
  NanPolicy nan_policy_ = kDefaultNanPolicy;
  NanCheck nan_check_ = NanCheck::kAuto;
  // The deferred check, on the loss's device: the first step whose loss was not finite, or -1.
  torch::Tensor first_non_finite_step_;
  int64_t skipped_steps_ = 0;
  GradientHook gradient_hook_;
  Autocast autocast_;
  std::optional<GradScaler> scaler_;
  int64_t scaler_skipped_steps_ = 0;
};

}  // namespace kd::train
