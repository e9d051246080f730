#include "trainer/data/pipeline.h"

#include <chrono>

#include <torch/torch.h>

#include "trainer/common/error.h"

namespace kd::data {
namespace {

// SplitMix64: a well-mixed 64-bit seed for each (seed, epoch[, batch]).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

at::Generator generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

}  // namespace

Pipeline::Pipeline(const config::Node& o, int64_t seed, PipelineOptions defaults) {
  options_ = defaults;
  options_.seed = seed;
  options_.batch_size = o.get_int_in("batch_size", std::nullopt, 1, int64_t{1} << 31);
  options_.shuffle = o.get_bool("shuffle", defaults.shuffle);
  options_.num_epochs = o.get_int_in("num_epochs", defaults.num_epochs, 0, 1'000'000'000);  // 0: endless
  options_.drop_remainder = o.get_bool("drop_remainder", defaults.drop_remainder);
  // Prefetched batches wait in memory; a few keep the worker ahead of any step. `auto` leaves
  // the choice to the owner (`defaults.prefetch`; the Trainer measures, see run/tuning_internal.h).
  if (prefetch_is_auto(o)) {
    options_.prefetch = defaults.prefetch;
  } else {
    try {
      options_.prefetch = o.get_int_in("prefetch", defaults.prefetch, 0, 64);
    } catch (const ConfigError& e) {
      throw ConfigError(std::string(e.what()) + " (prefetch is auto or a number of batches)");
    }
  }
  if (options_.batch_size <= 0) throw ConfigError(o.where() + ": batch_size must be > 0");
  if (auto list = o.find("transforms"); list && !list->is_null()) {
    for (const config::Node& t : list->elements()) {
      transforms_.push_back(transform_registry().create(t));
      transform_types_.push_back(t.get_string("type"));
    }
  }
  source_ = source_registry().create(o);  // reads `type` and the source's own keys
  init();
}

Pipeline::Pipeline(SourcePtr source, std::vector<TransformPtr> transforms, PipelineOptions options)
    : source_(std::move(source)), transforms_(std::move(transforms)), options_(options) {
  init();
}

void Pipeline::init() {
  if (options_.num_shards < 1 || options_.shard_index < 0 || options_.shard_index >= options_.num_shards) {
    throw Error("pipeline shard " + std::to_string(options_.shard_index) + " of " +
                std::to_string(options_.num_shards) + " does not exist");
  }
  examples_ = source_->load();
  warnings_ = source_->warnings();
  num_examples_ = data::num_examples(examples_, source_->describe());
  description_ = source_->describe() + " (" + std::to_string(num_examples_) + " examples, batch " +
                 std::to_string(options_.batch_size) + ")";
  if (batches_per_epoch() == 0) {
    throw ConfigError(description_ + ": batch_size " + std::to_string(options_.batch_size) + " is larger than the " +
                      std::to_string(num_examples_) + " examples and drop_remainder is true: no batch to make");
  }
  start_worker();
}

Pipeline::~Pipeline() { stop_worker(); }

int64_t Pipeline::batches_per_epoch() const {
  return options_.drop_remainder ? num_examples_ / options_.batch_size
                                 : (num_examples_ + options_.batch_size - 1) / options_.batch_size;
}

bool Pipeline::valid(const PipelineState& at) const {
  return options_.num_epochs == 0 || at.epoch < options_.num_epochs;
}

PipelineState Pipeline::advance(PipelineState at) const {
  if (++at.index == batches_per_epoch()) {
    ++at.epoch;
    at.index = 0;
  }
  return at;
}

Tree Pipeline::batch_at(const PipelineState& at) const {
  const uint64_t epoch_seed = mix(mix(static_cast<uint64_t>(options_.seed)) ^ static_cast<uint64_t>(at.epoch));
  int64_t start = at.index * options_.batch_size;
  int64_t size = std::min(options_.batch_size, num_examples_ - start);
  if (options_.num_shards > 1) {
    const int64_t begin = options_.shard_index * size / options_.num_shards;
    const int64_t end = (options_.shard_index + 1) * size / options_.num_shards;
    start += begin;
    size = end - begin;
  }
  torch::Tensor indices;
  if (options_.shuffle) {
    torch::Tensor order;
    {
      // One permutation per epoch, computed once (batch_at runs on one thread at a time, but
      // restore() may switch threads).
      std::lock_guard lock(order_mutex_);
      if (order_epoch_ != at.epoch) {
        at::Generator g = generator(epoch_seed);
        order_ = at::randperm(num_examples_, g, torch::kLong);
        order_epoch_ = at.epoch;
      }
      order = order_;
    }
    indices = order.narrow(0, start, size);  // this shard's part of the global batch
  } else {
    indices = torch::arange(start, start + size, torch::kLong);
  }
  Tree batch = examples_.map([&](const torch::Tensor& t) { return t.index_select(0, indices); });
  // Random transforms draw per batch; shards draw from their own streams (the same examples as
  // one process, but other random flips and crops).
  uint64_t batch_seed = mix(epoch_seed ^ mix(static_cast<uint64_t>(at.index)));
  if (options_.num_shards > 1) batch_seed = mix(batch_seed ^ mix(static_cast<uint64_t>(options_.shard_index) + 1));
  at::Generator g = generator(batch_seed);
  for (std::size_t i = 0; i < transforms_.size(); ++i) {
    const auto label = [&] {
      std::string shapes;
      for (const auto& [path, leaf] : batch.flatten())
        shapes += (shapes.empty() ? "" : ", ") + path + " " + leaf.describe();
      return "transforms[" + std::to_string(i) + "]" +
             (i < transform_types_.size() ? " (" + transform_types_[i] + ")" : "") + " of " + source_->describe() +
             " failed on the batch {" + shapes + "}";
    };
    try {
      batch = transforms_[i]->apply(batch, g);
    } catch (Error& e) {
      e.add_context(label());
      throw;
    } catch (const c10::Error& e) {
      throw TypeError(label() + ": " + e.msg().substr(0, e.msg().find('\n')));
    } catch (const std::exception& e) {  // a transform of a user's that throws its own
      throw TypeError(label() + ": " + e.what());
    }
  }
  return batch;
}

void Pipeline::start_worker() {
  stop_ = false;
  ready_.clear();
  error_ = nullptr;
  if (options_.prefetch <= 0) return;
  worker_ = std::thread([this, at = position_]() mutable {
    try {
      while (true) {
        {
          // Room first, then the batch: at most `prefetch` batches exist ahead of the one in use,
          // counting the one being made.
          std::unique_lock lock(mutex_);
          changed_.wait(lock, [&] { return stop_ || static_cast<int64_t>(ready_.size()) < options_.prefetch; });
          if (stop_) return;
        }
        std::optional<Tree> batch;
        if (valid(at)) batch = batch_at(at);
        std::lock_guard lock(mutex_);
        if (stop_) return;
        const bool end = !batch.has_value();
        ready_.push_back(std::move(batch));
        changed_.notify_all();
        if (end) return;
        at = advance(at);
      }
    } catch (...) {
      std::lock_guard lock(mutex_);
      error_ = std::current_exception();
      changed_.notify_all();
    }
  });
}

void Pipeline::stop_worker() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    changed_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
}

std::optional<Tree> Pipeline::next() {
  std::optional<Tree> batch;
  if (options_.prefetch <= 0) {
    if (!valid(position_)) return std::nullopt;
    const auto start = std::chrono::steady_clock::now();
    batch = batch_at(position_);
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } else {
    const auto start = std::chrono::steady_clock::now();
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !ready_.empty() || error_; });
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (ready_.empty()) std::rethrow_exception(error_);
    batch = std::move(ready_.front());
    ready_.pop_front();
    changed_.notify_all();
    if (!batch) {
      ready_.push_front(std::nullopt);  // stay at the end
      return std::nullopt;
    }
  }
  position_ = advance(position_);
  return batch;
}

void Pipeline::set_prefetch(int64_t prefetch) {
  if (prefetch < 0) throw Error("the pipeline's prefetch must be >= 0, got " + std::to_string(prefetch));
  stop_worker();
  options_.prefetch = prefetch;
  start_worker();  // from position_: the batches prefetched so far are made again
}

void Pipeline::restore(const PipelineState& state) {
  if (state.epoch < 0 || state.index < 0 || state.index >= batches_per_epoch()) {
    throw CorruptionError("the data position (epoch " + std::to_string(state.epoch) + ", batch " +
                          std::to_string(state.index) + ") does not exist in " + description_ + ", " +
                          std::to_string(batches_per_epoch()) + " batches per epoch");
  }
  stop_worker();
  position_ = state;
  start_worker();
}

bool prefetch_is_auto(const config::Node& ds) {
  const auto p = ds.find("prefetch");
  return !p || p->is_null() || (p->is_scalar() && p->as_string() == "auto");
}

Tree to_device(const Tree& batch, const c10::Device& device) {
  if (device.is_cpu()) return batch;
  return batch.map([&](const torch::Tensor& t) { return t.to(device, /*non_blocking=*/true); });
}

}  // namespace kd::data
