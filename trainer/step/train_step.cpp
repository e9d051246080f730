#include "trainer/step/train_step.h"

#include <cmath>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/context/error_context.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/optim/optimizer.h"
#include "trainer/optim/optimizer_state.h"
#include "trainer/summaries/summary.h"

namespace kd::train {
namespace {

Tree clone_tree(const Tree& tree) {
  return tree.map([](const torch::Tensor& t) { return t.detach().clone(); });
}

// The batch cut into `k` equal parts along dimension 0 (every tensor leaf).
std::vector<Tree> split_batch(const Tree& batch, int64_t k) {
  if (k == 1) return {batch};
  std::vector<Tree> parts;
  for (int64_t i = 0; i < k; ++i) {
    parts.push_back(batch.map_with_path([&](const Path& path, const torch::Tensor& t) {
      if (t.dim() == 0 || t.size(0) % k != 0) {
        throw ConfigError("optimizer.accumulate_steps = " + std::to_string(k) +
                          " must divide the batch size, but batch." + path.str() + " has " +
                          (t.dim() ? std::to_string(t.size(0)) : std::string("no")) + " rows");
      }
      const int64_t rows = t.size(0) / k;
      return t.narrow(0, i * rows, rows);
    }));
  }
  return parts;
}

}  // namespace

Context forward(models::Model& model, const Context& ctx, bool record_interms, const Autocast& autocast) {
  Tree inputs = Tree::dict();
  for (const auto& [name, path] : model.input_keys()) {
    try {
      inputs.insert(name, ctx.get(path));
    } catch (Error& e) {
      e.add_context("reading model input \"" + name + "\"");
      throw;
    }
  }
  std::optional<models::IntermsRecorder> recorder;  // sow() records only while one exists
  if (record_interms) recorder.emplace(model);
  Tree preds = detail::with_context("forward()", "model", "", "model", [&] {
    const AutocastGuard guard(autocast);
    return model.forward(inputs);
  });
  Tree interms = recorder ? recorder->interms() : Tree();
  if (autocast.precision != Precision::kFp32) {  // losses and metrics in float32
    preds = to_float32(preds);
    interms = to_float32(interms);
  }
  return ctx.replace({.preds = std::move(preds), .interms = std::move(interms)});
}

Context forward_with_loss(models::Model& model, const Auxiliaries& aux, const Context& ctx, bool record_interms,
                          const Autocast& autocast) {
  Context out = forward(model, ctx, record_interms, autocast);
  Tree loss_states = Tree::dict();
  torch::Tensor total;
  for (const auto& [name, loss] : aux.losses) {
    losses::Loss::Value value = detail::with_context(
        "computing the loss", "loss", "losses", name, [&] { return loss->evaluate(out); },
        [&] { return detail::describe_inputs(*loss, out); });
    loss_states.insert(name, loss->get_state(value));
    total = total.defined() ? total + value.loss : std::move(value.loss);
  }
  return out.replace({.loss_states = std::move(loss_states), .loss_total = total.defined() ? Tree(total) : Tree()});
}

TrainStep::TrainStep(models::ModelPtr model, const config::Node& optimizer_options,
                     std::shared_ptr<const Auxiliaries> auxiliaries)
    : model_(std::move(model)),
      optimizer_(std::make_unique<optim::Optimizer>(optimizer_options, *model_)),
      auxiliaries_(std::move(auxiliaries)),
      params_(params_tree(*model_)),
      collections_(buffers_tree(*model_)) {
  const std::vector<Path> all = auxiliaries_->paths();
  const std::vector<Path> after = auxiliaries_->paths_after_update();
  reads_.interms = reads_field(all, "interms");
  reads_.grads = reads_field(after, "grads");
  reads_.updates = reads_field(after, "updates");
  reads_.opt_state = reads_field(all, "opt_state");
  reads_.params_after_update = reads_field(after, "params");
}

TrainStep::~TrainStep() = default;

TrainState TrainStep::init() {
  opt_state_ = optim::optimizer_state_tree(optimizer_->torch_optimizer(), *model_);
  opt_state_entries_ = optimizer_->torch_optimizer().state().size();
  return TrainState{.step = 0, .params = params_, .collections = collections_, .opt_state = opt_state_};
}

std::pair<TrainState, AuxiliariesState> TrainStep::step(const TrainState& state, const Tree& batch,
                                                        const StepOptions& options) {
  if (!model_->is_training()) model_->train();
  const TrainState before = state_before_update(state);
  std::vector<Context> contexts = forward_and_backward(state, batch);
  const auto skipped = [&] {
    // Nothing to merge: a skipped step's NaN would hide the interval's losses.
    TrainState same = state;
    same.step = state.step + 1;
    return std::pair{std::move(same), AuxiliariesState{.auxiliaries = auxiliaries_}};
  };
  if (skip_non_finite(state, contexts)) return skipped();
  if (scaler_) {
    const bool overflow = scaler_->unscale(model_->parameters());
    scaler_->update(overflow);
    if (overflow) {  // the scale was too large for these gradients: no update, a smaller scale
      optimizer_->clear_gradients();
      ++scaler_skipped_steps_;
      return skipped();
    }
  }
  const Tree grads = reads_.grads ? copy_grads() : Tree();
  optimizer_->apply(state.step);
  const Tree updates = reads_.updates ? updates_since(before) : Tree();
  TrainState next = next_state(state);
  AuxiliariesState aux = aux_states(contexts, before, grads, updates, options.with_summaries);
  if (options.context_out) *options.context_out = contexts.back();
  return {std::move(next), std::move(aux)};
}

TrainState TrainStep::state_before_update(const TrainState& state) const {
  TrainState before = state;
  if (reads_.opt_state) before.opt_state = clone_tree(state.opt_state);
  if (reads_.params_after_update || reads_.updates) before.params = clone_tree(state.params);
  return before;
}

std::vector<Context> TrainStep::forward_and_backward(const TrainState& state, const Tree& batch) {
  const int64_t k = optimizer_->accumulate_steps();
  const std::vector<Tree> micro_batches = split_batch(batch, k);
  optimizer_->clear_gradients();
  std::vector<Context> contexts;
  contexts.reserve(micro_batches.size());
  for (const Tree& micro_batch : micro_batches) {
    Context ctx = Context::from_state_and_batch(state, micro_batch);
    ctx = forward_with_loss(*model_, *auxiliaries_, ctx, reads_.interms, autocast_);
    if (ctx.loss_total.is_none()) throw ConfigError("no training loss is configured: set train_losses");
    const torch::Tensor& loss = ctx.loss_total.tensor();
    const torch::Tensor part = k == 1 ? loss : loss / static_cast<double>(k);
    (scaler_ ? scaler_->scale(part) : part).backward();
    contexts.push_back(std::move(ctx));
  }
  return contexts;
}

bool TrainStep::skip_non_finite(const TrainState& state, const std::vector<Context>& contexts) {
  const torch::Tensor& first_loss = contexts.front().loss_total.tensor();
  const bool deferred =
      nan_policy_ == NanPolicy::kRaise && !gradient_hook_ &&
      (nan_check_ == NanCheck::kDeferred || (nan_check_ == NanCheck::kAuto && !first_loss.device().is_cpu()));
  if (deferred) {
    // On the device, no sync: the step's number where the loss is not finite and none was before.
    torch::NoGradGuard no_grad;
    torch::Tensor bad = torch::isfinite(contexts.front().loss_total.tensor().detach()).logical_not();
    for (std::size_t i = 1; i < contexts.size(); ++i) {
      bad.logical_or_(torch::isfinite(contexts[i].loss_total.tensor().detach()).logical_not());
    }
    if (!first_non_finite_step_.defined()) {
      first_non_finite_step_ = torch::full({}, -1, first_loss.options().dtype(torch::kLong));
    }
    first_non_finite_step_.masked_fill_(bad.logical_and_(first_non_finite_step_ < 0), state.step);
    return false;
  }
  bool here = false;
  if (nan_policy_ != NanPolicy::kIgnore) {
    double total = 0;
    for (const Context& ctx : contexts) total += ctx.loss_total.tensor().item<double>();
    here = !std::isfinite(total);
  }
  const bool any = gradient_hook_ ? gradient_hook_(here) : here;
  if (nan_policy_ == NanPolicy::kIgnore || !any) return false;
  const std::string what = here ? describe_non_finite(contexts.back())
                                : "the loss of another process of the job is not finite (its log names it)";
  if (nan_policy_ == NanPolicy::kRaise) {
    throw NonFiniteError("non-finite loss at step " + std::to_string(state.step) + ": " + what +
                         " (nan_policy: raise; set nan_policy: skip_step to skip such steps)");
  }
  optimizer_->clear_gradients();
  ++skipped_steps_;
  return true;
}

void TrainStep::check_deferred_non_finite() {
  if (!first_non_finite_step_.defined()) return;
  const int64_t step = first_non_finite_step_.item<int64_t>();  // the one sync
  if (step < 0) return;
  first_non_finite_step_ = torch::Tensor();
  throw NonFiniteError("non-finite loss at step " + std::to_string(step) +
                       " (checked on the device without a sync each step, so later steps ran on; "
                       "nan_policy: raise; set nan_policy: skip_step to skip such steps)");
}

Tree TrainStep::copy_grads() const {
  return params_.map(
      [](const torch::Tensor& p) { return p.grad().defined() ? p.grad().detach().clone() : torch::zeros_like(p); });
}

Tree TrainStep::updates_since(const TrainState& before) const {
  torch::NoGradGuard no_grad;
  return params_.map_with_path(
      [&](const Path& path, const torch::Tensor& p) { return p.detach() - before.params.get(path).tensor(); });
}

TrainState TrainStep::next_state(const TrainState& state) {
  const auto& torch_optimizer = optimizer_->torch_optimizer();
  if (reads_.opt_state || torch_optimizer.state().size() != opt_state_entries_) {
    opt_state_ = optim::optimizer_state_tree(torch_optimizer, *model_);
    opt_state_entries_ = torch_optimizer.state().size();
  }
  return TrainState{.step = state.step + 1, .params = params_, .collections = collections_, .opt_state = opt_state_};
}

AuxiliariesState TrainStep::aux_states(std::vector<Context>& contexts, const TrainState& before, const Tree& grads,
                                       const Tree& updates, bool with_summaries) const {
  AuxiliariesState merged;
  for (Context& ctx : contexts) {
    ctx = ctx.replace({.params = before.params, .grads = grads, .updates = updates, .opt_state = before.opt_state});
    ctx = fill_metrics_and_summaries(*auxiliaries_, ctx, with_summaries);
    AuxiliariesState s = ctx.get_aux_state({.return_losses = true, .return_metrics = true, .return_summaries = true});
    s.auxiliaries = auxiliaries_;
    merged = merge(merged, s);
  }
  return merged;
}

AuxiliariesState TrainStep::eval_step(const TrainState& state, const Tree& batch,
                                      const std::shared_ptr<const Auxiliaries>& eval_aux) {
  const std::shared_ptr<const Auxiliaries>& aux = eval_aux ? eval_aux : auxiliaries_;
  const bool was_training = model_->is_training();
  if (was_training) model_->eval();
  torch::NoGradGuard no_grad;
  Context ctx = Context::from_state_and_batch(state, batch);
  ctx = forward_with_loss(*model_, *aux, ctx, reads_field(aux->paths(), "interms"), autocast_);
  ctx = fill_metrics_and_summaries(*aux, ctx, /*with_summaries=*/true);
  if (was_training) model_->train();
  AuxiliariesState s = ctx.get_aux_state({.return_losses = true, .return_metrics = true, .return_summaries = true});
  s.auxiliaries = aux;
  return s;
}

Context TrainStep::predict_step(const TrainState& state, const Tree& batch, bool record_interms) {
  const bool was_training = model_->is_training();
  if (was_training) model_->eval();
  torch::NoGradGuard no_grad;
  Context ctx = forward(*model_, Context::from_state_and_batch(state, batch), record_interms, autocast_);
  if (was_training) model_->train();
  return ctx;
}

std::string TrainStep::describe_non_finite(const Context& ctx) const {
  std::string out;
  for (const auto& [name, state] : ctx.loss_states.items()) {
    const double v = metrics::AverageState::compute(state).item<double>();
    if (!std::isfinite(v)) {
      out = "losses/" + name + " = " + std::to_string(v);
      break;
    }
  }
  for (const auto& [path, leaf] : params_.flatten_paths()) {
    const torch::Tensor& g = leaf.tensor().grad();
    if (g.defined() && !torch::isfinite(g).all().item<bool>()) {
      out += "; first non-finite gradient: grads." + path.str();
      break;
    }
  }
  return out.empty() ? "the total loss is not finite" : out;
}

NanPolicy parse_nan_policy(const config::Node& experiment) {
  const char* names[] = {"ignore", "raise", "skip_step"};  // in NanPolicy's order
  const std::string policy = experiment.get_string("nan_policy", names[static_cast<int>(kDefaultNanPolicy)]);
  if (policy == "raise") return NanPolicy::kRaise;
  if (policy == "skip_step") return NanPolicy::kSkipStep;
  if (policy == "ignore") return NanPolicy::kIgnore;
  throw ConfigError(experiment.child("nan_policy").where() + ": nan_policy must be raise, skip_step or ignore, got \"" +
                    policy + "\"");
}

Context TrainStep::fill_metrics_and_summaries(const Auxiliaries& aux, const Context& ctx, bool with_summaries) const {
  torch::NoGradGuard no_grad;
  Tree metric_states = Tree::dict();
  for (const auto& [name, metric] : aux.metrics) {
    metric_states.insert(name, detail::with_context(
                                   "get_state()", "metric", "metrics", name, [&] { return metric->get_state(ctx); },
                                   [&] { return detail::describe_inputs(*metric, ctx); }));
  }
  Context out = ctx.replace({.metric_states = std::move(metric_states)});
  if (!with_summaries) return out;
  Tree summary_states = Tree::dict();
  for (const auto& [name, summary] : aux.summaries) {
    summary_states.insert(name,
                          detail::with_context(
                              "get_state()", "summary", "summaries", name, [&] { return summary->get_state(out); },
                              [&] { return detail::describe_inputs(*summary, out); }));
  }
  return out.replace({.summary_states = std::move(summary_states)});
}

}  // namespace kd::train
