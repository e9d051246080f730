#include "trainer/run/data_parallel_internal.h"

#include <chrono>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "trainer/checkpoints/random_states.h"
#include "trainer/common/error.h"
#include "trainer/distributed/distributed.h"
#include "trainer/models/model.h"
#include "trainer/optim/optimizer.h"
#include "trainer/run/stop_signals_internal.h"
#include "trainer/step/auxiliaries.h"
#include "trainer/step/train_step.h"

namespace kd::train {
namespace {

using Clock = std::chrono::steady_clock;

// This process alone: nothing to agree on.
class SingleProcess final : public DataParallel {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_world_size() const override { return 1; }
  c10::Device rank_device(const c10::Device& device, const std::string&) const override { return device; }
  void join(const distributed::Options&, const c10::Device&, TrainStep&, int64_t, spdlog::logger&) override {}
  void broadcast_parameters() override {}
  void broadcast_buffers() override {}
  int64_t rank0_value(int64_t value, const std::string&) override { return value; }
  AuxiliariesState merge(const AuxiliariesState& state, const std::shared_ptr<const Auxiliaries>&,
                         const std::string&) override {
    return state;
  }
  bool stop_requested(bool signalled) const override { return signalled || stop_asked_; }
  Tree gather_random_states(const c10::Device&, const std::string&) override { return Tree(); }
  void restore_random_states(const Tree*, int64_t, int64_t) override {}
  void seed_rank(int64_t, int64_t) override {}
};

// One rank of a job of several.
class Job final : public DataParallel {
 public:
  explicit Job(const distributed::WorldInfo& world) : world_(world) {}

  int rank() const override { return world_.rank; }
  int world_size() const override { return world_.world_size; }
  int local_world_size() const override { return world_.local_world_size; }

  c10::Device rank_device(const c10::Device& device, const std::string& where) const override {
    if (!device.is_cuda() || device.has_index() || torch::cuda::device_count() <= 1) return device;
    // `device: cuda` in a job: each rank its own GPU, LOCAL_RANK (a scheduler that shows each
    // rank only its own GPU leaves one: cuda:0).
    if (world_.local_rank >= static_cast<int>(torch::cuda::device_count())) {
      throw ConfigError(where + ": rank " + std::to_string(world_.rank) + " has LOCAL_RANK " +
                        std::to_string(world_.local_rank) + " but this machine shows " +
                        std::to_string(torch::cuda::device_count()) + " GPUs; start at most one rank per GPU");
    }
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(world_.local_rank));
  }

  void join(const distributed::Options& options, const c10::Device& device, TrainStep& step, int64_t global_batch,
            spdlog::logger& log) override {
    const auto start = Clock::now();
    const double timeout_s = std::chrono::duration<double>(options.timeout).count();
    // Shown by every rank (the others log only warnings): a rank may wait here for a while.
    log.log(is_chief() ? spdlog::level::info : spdlog::level::warn,
            "joining a job of {} ranks at {}:{} as rank {} (from {}; waiting up to {} s for the others)",
            world_.world_size, world_.master_addr, world_.master_port, world_.rank, world_.source, timeout_s);
    step_ = &step;
    group_ = distributed::ProcessGroup::create(world_, options, device);
    reducer_ = std::make_unique<distributed::GradientReducer>(group_, step.model().parameters(), options.bucket_bytes);
    for (const auto& b : step.model().buffers()) {
      if (b.defined()) buffers_.push_back(b.detach());
    }
    // Every step all-reduces the gradients and, with them, two flags: "my loss is not finite"
    // and "I was asked to stop", so that every rank skips, raises or stops at the same step.
    step.set_gradient_hook([this](bool non_finite) {
      const std::vector<double> any =
          reducer_->reduce({non_finite ? 1.0 : 0.0, StopSignals::pending() != 0 || stop_asked_ ? 1.0 : 0.0});
      stop_all_ = any[1] > 0;
      return any[0] > 0;
    });
    log.info(
        "data parallel: {} ranks ({} backend, rendezvous {}:{}, {:.1f} s); global batch {} = {} per rank; "
        "{} gradient bucket{}; timeout {} s",
        world_.world_size, group_->backend(), world_.master_addr, world_.master_port,
        std::chrono::duration<double>(Clock::now() - start).count(), global_batch, global_batch / world_.world_size,
        reducer_->num_buckets(), reducer_->num_buckets() == 1 ? "" : "s", timeout_s);
  }

  void broadcast_parameters() override {
    std::vector<torch::Tensor> tensors;
    for (const auto& p : step_->model().parameters()) tensors.push_back(p.detach());
    for (const auto& b : step_->model().buffers()) {
      if (b.defined()) tensors.push_back(b.detach());
    }
    for (const auto& [path, leaf] : step_->optimizer().ema_params().flatten_paths()) {
      tensors.push_back(leaf.tensor().detach());
    }
    group_->broadcast(tensors, 0, "the broadcast of the parameters from rank 0");
  }

  void broadcast_buffers() override {
    if (!buffers_.empty()) group_->broadcast(buffers_, 0, "the broadcast of the buffers from rank 0");
  }

  int64_t rank0_value(int64_t value, const std::string& what) override {
    std::vector<torch::Tensor> t{torch::full({1}, value, torch::kLong).to(group_->device())};
    group_->broadcast(t, 0, what);
    return t[0].cpu().item<int64_t>();
  }

  AuxiliariesState merge(const AuxiliariesState& state, const std::shared_ptr<const Auxiliaries>& auxiliaries,
                         const std::string& what) override {
    AuxiliariesState merged;
    merged.auxiliaries = auxiliaries;
    for (const Tree& t : distributed::all_gather_trees(*group_, state.to_tree(), what)) {
      merged = train::merge(merged, AuxiliariesState::from_tree(t, auxiliaries));
    }
    return merged;
  }

  bool stop_requested(bool) const override { return stop_all_; }

  Tree gather_random_states(const c10::Device& device, const std::string& what) override {
    return Tree::list(
        distributed::all_gather_trees(*group_, checkpoints::random_states({c10::Device(c10::kCPU), device}), what));
  }

  void restore_random_states(const Tree* saved, int64_t seed, int64_t step) override {
    // A job resumed on another number of ranks gives ranks other than 0 fresh streams.
    if (saved && saved->is_list() && static_cast<int>(saved->size()) == world_size()) {
      if (!is_chief()) checkpoints::set_random_states(saved->children()[static_cast<std::size_t>(rank())]);
    } else {
      seed_rank(seed, step);
    }
  }

  void seed_rank(int64_t seed, int64_t step) override {
    if (is_chief()) return;
    torch::manual_seed(static_cast<uint64_t>(seed) * 1000003ULL + static_cast<uint64_t>(rank()) * 7919ULL +
                       static_cast<uint64_t>(step));
  }

 private:
  distributed::WorldInfo world_;
  TrainStep* step_ = nullptr;
  std::shared_ptr<distributed::ProcessGroup> group_;
  std::unique_ptr<distributed::GradientReducer> reducer_;
  std::vector<torch::Tensor> buffers_;  // the model's buffers, broadcast after each step
  bool stop_all_ = false;               // some rank was asked to stop (agreed during the last step)
};

}  // namespace

std::unique_ptr<DataParallel> DataParallel::from_environment() {
  if (auto world = distributed::world_from_environment(); world && world->world_size > 1) {
    return std::make_unique<Job>(*world);
  }
  return std::make_unique<SingleProcess>();
}

}  // namespace kd::train
