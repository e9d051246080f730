// The one place where kd adapts to differences between LibTorch versions (Debian's 1.13 and
// upstream 2.x, CPU or CUDA). Everything else in kd uses the API common to all of them.
#pragma once

#include <sstream>
#include <string>
#include <type_traits>

#include <torch/types.h>

namespace kd::compat {

// The key torch::optim::Optimizer::state() uses for a parameter: LibTorch 1.13 keys it by the
// printed TensorImpl address (a std::string), later versions by the address itself.
template <typename StateMap>
typename StateMap::key_type optimizer_state_key(const torch::Tensor& param) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;  // what c10::guts::to_string does in 1.13
    out << param.unsafeGetTensorImpl();
    return out.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

}  // namespace kd::compat

#include <atomic>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/version.h>

namespace kd::compat {

// A CPU allocator that counts allocations and forwards them to the one it replaces (used by
// benchmarks to count per-step tensor allocations). LibTorch 2.3 made `allocate` non-const and
// added `copy_data`.
class CountingCpuAllocator : public c10::Allocator {
 public:
  CountingCpuAllocator() : base_(c10::GetCPUAllocator()) {}

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  c10::DataPtr allocate(size_t n) override {
    count_.fetch_add(1, std::memory_order_relaxed);
    return base_->allocate(n);
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    base_->copy_data(dest, src, count);
  }
#else
  c10::DataPtr allocate(size_t n) const override {
    count_.fetch_add(1, std::memory_order_relaxed);
    return base_->allocate(n);
  }
#endif
  c10::DeleterFnPtr raw_deleter() const override { return base_->raw_deleter(); }

  // Routes every CPU tensor allocation through this allocator from now on.
  void install() { c10::SetCPUAllocator(this, /*priority=*/100); }
  int64_t count() const { return count_.load(); }

 private:
  c10::Allocator* base_;
  mutable std::atomic<int64_t> count_{0};
};

}  // namespace kd::compat
