// The one place where kd adapts to differences between LibTorch versions (Debian's 1.13 and
// upstream 2.x, CPU or CUDA). Everything else in kd uses the API common to all of them.
// The c10d section at the end is compiled only where KD_COMPAT_C10D is defined.
#pragma once

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

#include <torch/types.h>
#include <torch/version.h>

namespace kd::compat {

// Causal self-attention, softmax(q k^T / sqrt(head size), each position seeing itself and those
// before it) v, on [B, heads, T, head size], with dropout `dropout_p` on the attention weights.
// LibTorch 2 fuses it (scaled_dot_product_attention: flash attention on the CPU, no [T, T]
// matrix kept for the backward pass); 1.13, which lacks it, computes the same in matrix
// products and a softmax.
inline torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      double dropout_p) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, dropout_p, /*is_causal=*/true);
#else
  const int64_t T = q.size(-2);
  const torch::Tensor future = torch::ones({T, T}, q.options().dtype(torch::kBool)).triu(1);
  torch::Tensor att = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  att = at::softmax(att.masked_fill(future, -std::numeric_limits<double>::infinity()), -1);
  if (dropout_p > 0) att = at::dropout(att, dropout_p, /*train=*/true);
  return at::matmul(att, v);
#endif
}

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
  void copy_data(void* dest, const void* src, std::size_t count) const override { base_->copy_data(dest, src, count); }
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

// ---- c10d (distributed) ------------------------------------------------------------------------
// Only for the translation units that define KD_COMPAT_C10D before including this header: the
// c10d and Gloo headers are heavy. The header paths are the same in 1.13 and 2.x; what differs:
// Gloo and NCCL derive from c10d::ProcessGroup in 1.13 and from c10d::Backend in 2.x, and a
// LibTorch may lack Gloo's headers or NCCL (USE_C10D_GLOO / USE_C10D_NCCL, set by its CMake
// package).
#ifdef KD_COMPAT_C10D

#include <chrono>
#include <cstdlib>
#include <string>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>  // not only through Gloo's header, which may be absent
#endif

#if defined(USE_C10D_GLOO) && __has_include(<gloo/config.h>)
#define KD_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(USE_C10D_NCCL) && !__has_include(<nccl.h>)
#undef USE_C10D_NCCL  // a CUDA LibTorch whose NCCL headers are not installed: Gloo only
#endif
#if defined(USE_C10D_NCCL)
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "trainer/common/error.h"

namespace kd::compat {

using Work = c10d::Work;
#if TORCH_VERSION_MAJOR >= 2
using Backend = c10d::Backend;
#else
using Backend = c10d::ProcessGroup;
#endif

#if defined(USE_C10D_NCCL)
inline constexpr bool kHaveNccl = true;
inline int current_cuda_device() { return c10::cuda::current_device(); }
inline void set_cuda_device(int index) {
  if (index >= 0) c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
}
#else
inline constexpr bool kHaveNccl = false;
inline int current_cuda_device() { return 0; }
inline void set_cuda_device(int) {}
#endif

// A Gloo or NCCL process group. Gloo's network device: the interface GLOO_SOCKET_IFNAME names
// (as in PyTorch), else `bind_address` (the caller's: the local address that reaches the
// rendezvous), else, as PyTorch, the address this host's name resolves to (loopback when it
// resolves to none).
inline c10::intrusive_ptr<Backend> make_process_group(const std::string& backend,
                                                      const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                      std::chrono::milliseconds timeout,
                                                      const std::string& bind_address) {
  if (backend == "nccl") {
#if defined(USE_C10D_NCCL)
    // Without blocking wait, NCCL enforces the timeout by aborting the process from a watchdog
    // thread; with it, a timed-out collective throws like Gloo's (1.13 and 2.x spellings).
    ::setenv("NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
    ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#else
    throw NotSupportedError("this LibTorch was built without NCCL; use distributed.backend: gloo");
#endif
  }
#if defined(KD_HAVE_GLOO)
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname != '\0') {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (!bind_address.empty()) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind_address));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
#else
  throw NotSupportedError(
      "this LibTorch was built without Gloo (or its gloo/ headers are not installed); "
      "use distributed.backend: nccl on CUDA");
#endif
}

}  // namespace kd::compat

#endif  // KD_COMPAT_C10D

// ---- autocast ----------------------------------------------------------------------------------
// Only for the translation units that define KD_COMPAT_AUTOCAST before including this header.
// LibTorch 1.13 has one pair of functions per device (set_cpu_enabled, set_autocast_gpu_dtype);
// 2.4 took the device type as an argument and deprecated the others.
#ifdef KD_COMPAT_AUTOCAST

#include <ATen/autocast_mode.h>

namespace kd::compat {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
inline bool autocast_enabled(c10::DeviceType device) { return at::autocast::is_autocast_enabled(device); }
inline void set_autocast_enabled(c10::DeviceType device, bool on) { at::autocast::set_autocast_enabled(device, on); }
inline c10::ScalarType autocast_dtype(c10::DeviceType device) { return at::autocast::get_autocast_dtype(device); }
inline void set_autocast_dtype(c10::DeviceType device, c10::ScalarType dtype) {
  at::autocast::set_autocast_dtype(device, dtype);
}
#else
inline bool autocast_enabled(c10::DeviceType device) {
  return device == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
inline void set_autocast_enabled(c10::DeviceType device, bool on) {
  device == c10::DeviceType::CUDA ? at::autocast::set_enabled(on) : at::autocast::set_cpu_enabled(on);
}
inline c10::ScalarType autocast_dtype(c10::DeviceType device) {
  return device == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                         : at::autocast::get_autocast_cpu_dtype();
}
inline void set_autocast_dtype(c10::DeviceType device, c10::ScalarType dtype) {
  device == c10::DeviceType::CUDA ? at::autocast::set_autocast_gpu_dtype(dtype)
                                  : at::autocast::set_autocast_cpu_dtype(dtype);
}
#endif

}  // namespace kd::compat

#endif  // KD_COMPAT_AUTOCAST

// ---- CUDA memory statistics --------------------------------------------------------------------
// Only where LibTorch is built with CUDA (KD_WITH_CUDA, set by trainer/CMakeLists.txt when its
// CMake package lists CUDA libraries). The stats struct moved from c10::cuda::CUDACachingAllocator
// to c10::CachingDeviceAllocator in 2.5; getDeviceStats and the layout of its arrays did not.
#if defined(KD_COMPAT_CUDA_MEMORY) && defined(KD_WITH_CUDA)

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

namespace kd::compat {

// The most bytes LibTorch's caching allocator has held in tensors on CUDA device `index` (< 0:
// the current device).
inline int64_t cuda_peak_allocated_bytes(int index) {
  const auto device = static_cast<c10::DeviceIndex>(index < 0 ? c10::cuda::current_device() : index);
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  return stats.allocated_bytes[0].peak;  // [0]: StatType::AGGREGATE in every version
}

}  // namespace kd::compat

#endif  // KD_COMPAT_CUDA_MEMORY && KD_WITH_CUDA
