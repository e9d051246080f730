#include "trainer/data/pipeline.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/data/index_shuffle.h"
#include "trainer/runtime/cores.h"

namespace kd::data {
namespace {

at::Generator generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// Whether `examples` have the same leaves, of the same dtypes and sizes, one row each (the
// stack then has a row per example, as Transform::apply_each expects).
bool stackable(const std::vector<Tree>& examples) {
  const auto first = examples.front().flatten();
  for (std::size_t k = 0; k < examples.size(); ++k) {
    const auto leaves = examples[k].flatten();
    if (leaves.size() != first.size()) return false;
    for (std::size_t l = 0; l < leaves.size(); ++l) {
      if (leaves[l].first != first[l].first || !leaves[l].second.is_tensor() || !first[l].second.is_tensor()) {
        return false;
      }
      const torch::Tensor &a = leaves[l].second.tensor(), &b = first[l].second.tensor();
      if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes() || a.dim() == 0 || a.size(0) != 1) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

Pipeline::Pipeline(const config::Node& o, int64_t seed, PipelineOptions defaults) {
  options_ = defaults;
  options_.seed = seed;
  options_.batch_size = o.get_int_in("batch_size", std::nullopt, 1, int64_t{1} << 31);
  options_.shuffle = o.get_bool("shuffle", defaults.shuffle);
  options_.num_epochs = o.get_int_in("num_epochs", defaults.num_epochs, 0, 1'000'000'000);  // 0: endless
  options_.drop_remainder = o.get_bool("drop_remainder", defaults.drop_remainder);
  if (defaults.in_order) {
    options_.shuffle = false;
    options_.num_epochs = 1;
    options_.drop_remainder = false;
  }
  // Prefetched batches wait in memory; a few keep the workers ahead of any step. `auto` leaves
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
  if (auto w = o.find("num_workers"); w && !w->is_null() && !(w->is_scalar() && w->as_string() == "auto")) {
    try {
      options_.num_workers = o.get_int_in("num_workers", std::nullopt, 1, 256);
    } catch (const ConfigError& e) {
      throw ConfigError(std::string(e.what()) + " (num_workers is auto or a number of threads)");
    }
  }
  const std::string on_error = o.get_string("on_error", "raise");
  if (on_error != "raise" && on_error != "skip") {
    throw ConfigError(o.child("on_error").where() + ": on_error must be raise or skip, got \"" + on_error + "\"");
  }
  options_.skip_unreadable = on_error == "skip";
  if (auto list = o.find("transforms"); list && !list->is_null()) {
    for (const config::Node& t : list->elements()) {
      transforms_.push_back(transform_registry().create(t));
      transform_types_.push_back(t.get_string("type"));
    }
  }
  source_ = source_registry().create(o);  // reads `type` and the source's own keys
  if (options_.read_data) init();
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
  if (source_->random_access()) {
    num_examples_ = source_->size();
    if (num_examples_ <= 0) throw ConfigError(source_->describe() + " holds no examples");
  } else {
    examples_ = source_->load();
    num_examples_ = data::num_examples(examples_, source_->describe());
  }
  warnings_ = source_->warnings();
  // Workers: as asked, else one for data in memory (a batch is a gather), and for data read an
  // example at a time the cores the intra-op threads leave.
  workers_count_ = options_.num_workers;
  if (workers_count_ <= 0) {
    workers_count_ =
        source_->random_access() ? std::max<int64_t>(1, runtime::available_cores() - torch::get_num_threads()) : 1;
  }
  description_ = source_->describe() + " (" + std::to_string(num_examples_) + " examples, batch " +
                 std::to_string(options_.batch_size) +
                 (source_->random_access() ? ", read as needed by " + std::to_string(workers_count_) + " worker" +
                                                 (workers_count_ == 1 ? "" : "s")
                                           : std::string()) +
                 ")";
  if (batches_per_epoch() == 0) {
    throw ConfigError(description_ + ": batch_size " + std::to_string(options_.batch_size) + " is larger than the " +
                      std::to_string(num_examples_) + " examples and drop_remainder is true: no batch to make");
  }
  start_workers();
}

Pipeline::~Pipeline() { stop_workers(); }

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

Tree Pipeline::run_transform(std::size_t i, const Tree& batch, const std::function<Tree()>& run,
                             const std::function<std::string()>& what) const {
  const auto label = [&] {
    std::string shapes;
    for (const auto& [path, leaf] : batch.flatten())
      shapes += (shapes.empty() ? "" : ", ") + path + " " + leaf.describe();
    return "transforms[" + std::to_string(i) + "]" +
           (i < transform_types_.size() ? " (" + transform_types_[i] + ")" : "") + " of " + source_->describe() +
           " failed on " + what() + " {" + shapes + "}";
  };
  try {
    return run();
  } catch (Error& e) {
    e.add_context(label());
    throw;
  } catch (const c10::Error& e) {
    throw TypeError(label() + ": " + e.msg().substr(0, e.msg().find('\n')));
  } catch (const std::exception& e) {  // a transform of a user's that throws its own
    throw TypeError(label() + ": " + e.what());
  }
}

Tree Pipeline::transformed(Tree batch, uint64_t seed, const std::function<std::string()>& what) const {
  if (transforms_.empty()) return batch;  // no generator to seed (a Mersenne Twister's 2.5 KB)
  at::Generator g = generator(seed);
  for (std::size_t i = 0; i < transforms_.size(); ++i) {
    batch = run_transform(
        i, batch, [&] { return transforms_[i]->apply(batch, g); }, what);
  }
  return batch;
}

Tree Pipeline::transformed_examples(std::vector<Tree> examples, const std::vector<uint64_t>& seeds,
                                    const std::function<std::string(std::size_t)>& name) const {
  if (transforms_.empty()) return stack_examples(examples, name);  // no generators to seed
  std::vector<at::Generator> generators;
  generators.reserve(seeds.size());
  for (const uint64_t seed : seeds) generators.push_back(generator(seed));
  const std::vector<Tree> read = examples;  // (their tensors shared) to name an example that fails
  // While the transforms can, they run once on the examples stacked (Transform::applies_each);
  // the others run on each example.
  std::optional<Tree> stacked;
  for (std::size_t i = 0; i < transforms_.size(); ++i) {
    const Transform& t = *transforms_[i];
    if (t.applies_each() && (stacked || stackable(examples))) {
      if (!stacked) stacked = stack_examples(examples, name);
      try {
        stacked = run_transform(
            i, *stacked, [&] { return t.apply_each(*stacked, generators); },
            [&] { return "the examples of a batch (the first: " + name(0) + ")"; });
      } catch (const Error&) {
        // Each example again on its own, as the transforms define it: the error names the one
        // that fails (an out-of-range label, say) rather than the batch.
        for (std::size_t k = 0; k < read.size(); ++k) transformed(read[k], seeds[k], [&] { return name(k); });
        throw;
      }
      continue;
    }
    if (stacked) {
      for (std::size_t k = 0; k < examples.size(); ++k) {
        examples[k] = stacked->map([&](const torch::Tensor& x) { return x.narrow(0, static_cast<int64_t>(k), 1); });
      }
      stacked.reset();
    }
    for (std::size_t k = 0; k < examples.size(); ++k) {
      examples[k] = run_transform(
          i, examples[k], [&] { return t.apply(examples[k], generators[k]); }, [&] { return name(k); });
    }
  }
  return stacked ? std::move(*stacked) : stack_examples(examples, name);
}

Tree Pipeline::batch_at(const PipelineState& at) const { return make_batch(at).tree; }

Pipeline::Batch Pipeline::make_batch(const PipelineState& at) const {
  const uint64_t epoch_seed =
      mix_bits(mix_bits(static_cast<uint64_t>(options_.seed)) ^ static_cast<uint64_t>(at.epoch));
  int64_t start = at.index * options_.batch_size;
  int64_t size = std::min(options_.batch_size, num_examples_ - start);
  if (options_.num_shards > 1) {  // this shard's part of the global batch
    const int64_t begin = options_.shard_index * size / options_.num_shards;
    const int64_t end = (options_.shard_index + 1) * size / options_.num_shards;
    start += begin;
    size = end - begin;
  }
  // The examples at positions [start, start + size) of the epoch's order.
  std::vector<int64_t> indices(static_cast<std::size_t>(size));
  for (int64_t j = 0; j < size; ++j) {
    const auto position = static_cast<uint64_t>(start + j);
    indices[static_cast<std::size_t>(j)] =
        options_.shuffle
            ? static_cast<int64_t>(index_shuffle(position, static_cast<uint64_t>(num_examples_), epoch_seed))
            : static_cast<int64_t>(position);
  }
  if (source_->random_access()) {
    // Each example read and transformed as if on its own, its random stream seeded by its
    // position in the epoch: the same whichever worker, rank or batch size makes it.
    Batch out;
    std::vector<Tree> examples;
    std::vector<uint64_t> seeds;
    std::vector<int64_t> kept;
    for (int64_t j = 0; j < size; ++j) {
      const int64_t index = indices[static_cast<std::size_t>(j)];
      Tree example;
      try {
        example = source_->get(index).map([](const torch::Tensor& t) { return t.unsqueeze(0); });
      } catch (Error& e) {
        if (options_.skip_unreadable) {
          out.skipped.push_back(source_->name_of(index) + ": " + e.what());
          continue;
        }
        e.add_context(source_->describe() + ", " + source_->name_of(index) + " (on_error: skip leaves such out)");
        throw;
      }
      examples.push_back(std::move(example));
      seeds.push_back(mix_bits(epoch_seed ^ mix_bits(static_cast<uint64_t>(start + j))));
      kept.push_back(index);
    }
    if (examples.empty()) {
      throw CorruptionError("no example of batch " + std::to_string(at.index) + " of epoch " +
                            std::to_string(at.epoch) + " of " + source_->describe() +
                            " could be read; the first: " + out.skipped.front());
    }
    out.tree =
        transformed_examples(std::move(examples), seeds, [&](std::size_t k) { return source_->name_of(kept[k]); });
    return out;
  }
  const torch::Tensor picked = torch::tensor(indices, torch::kLong);
  Tree batch = examples_.map([&](const torch::Tensor& t) { return t.index_select(0, picked); });
  // Random transforms draw per batch; shards draw from their own streams (the same examples as
  // one process, but other random flips and crops).
  uint64_t batch_seed = mix_bits(epoch_seed ^ mix_bits(static_cast<uint64_t>(at.index)));
  if (options_.num_shards > 1) {
    batch_seed = mix_bits(batch_seed ^ mix_bits(static_cast<uint64_t>(options_.shard_index) + 1));
  }
  return {transformed(std::move(batch), batch_seed, [] { return std::string("the batch"); }), {}};
}

void Pipeline::start_workers() {
  stop_ = false;
  made_.clear();
  next_claim_ = next_take_ = 0;
  claim_at_ = position_;
  end_claimed_ = false;
  if (options_.prefetch <= 0) return;
  for (int64_t w = 0; w < workers_count_; ++w) {
    workers_.emplace_back([this] {
      // Workers run beside each other and the step: one thread each for their tensor operations.
      runtime::use_one_thread_for_ops_here();
      work();
    });
  }
}

void Pipeline::work() {
  const int64_t in_flight = std::max(options_.prefetch, workers_count_);
  while (true) {
    int64_t seq = 0;
    PipelineState at;
    {
      // Room first, then the batch: at most `in_flight` batches exist ahead of the one in use,
      // counting those being made.
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return stop_ || (!end_claimed_ && next_claim_ - next_take_ < in_flight); });
      if (stop_) return;
      seq = next_claim_++;
      at = claim_at_;
      if (valid(at)) {
        claim_at_ = advance(at);
      } else {
        end_claimed_ = true;
      }
    }
    Made made;
    try {
      if (valid(at)) made.batch = make_batch(at);
    } catch (...) {
      made.error = std::current_exception();
    }
    std::lock_guard lock(mutex_);
    if (stop_) return;
    if (made.error) end_claimed_ = true;  // nothing after an error is made
    made_.emplace(seq, std::move(made));
    changed_.notify_all();
  }
}

void Pipeline::stop_workers() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    changed_.notify_all();
  }
  for (auto& w : workers_) w.join();
  workers_.clear();
}

std::optional<Tree> Pipeline::next() {
  std::optional<Batch> batch;
  if (options_.prefetch <= 0) {
    if (!valid(position_)) return std::nullopt;
    const auto start = std::chrono::steady_clock::now();
    batch = make_batch(position_);
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } else {
    const auto start = std::chrono::steady_clock::now();
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return made_.count(next_take_) > 0; });
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Made& made = made_.at(next_take_);
    if (made.error) std::rethrow_exception(made.error);  // stays: next() raises it again
    if (!made.batch) return std::nullopt;                // stays at the end
    batch = std::move(made.batch);
    made_.erase(next_take_++);
    changed_.notify_all();
  }
  position_ = advance(position_);
  skipped_.insert(skipped_.end(), batch->skipped.begin(), batch->skipped.end());
  return std::move(batch->tree);
}

std::vector<std::string> Pipeline::take_skipped() { return std::exchange(skipped_, {}); }

void Pipeline::set_prefetch(int64_t prefetch) {
  if (prefetch < 0) throw Error("the pipeline's prefetch must be >= 0, got " + std::to_string(prefetch));
  stop_workers();
  options_.prefetch = prefetch;
  start_workers();  // from position_: the batches made ahead so far are made again
}

void Pipeline::restore(const PipelineState& state) {
  if (state.epoch < 0 || state.index < 0 || state.index >= batches_per_epoch()) {
    throw CorruptionError("the data position (epoch " + std::to_string(state.epoch) + ", batch " +
                          std::to_string(state.index) + ") does not exist in " + description_ + ", " +
                          std::to_string(batches_per_epoch()) + " batches per epoch");
  }
  stop_workers();
  position_ = state;
  start_workers();
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
