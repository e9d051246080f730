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
