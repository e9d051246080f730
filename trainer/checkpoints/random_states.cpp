#include "trainer/checkpoints/random_states.h"

#include <mutex>

#include <ATen/Context.h>
#include <torch/cuda.h>

#include "trainer/common/error.h"

namespace kd::checkpoints {

std::vector<c10::Device> generator_devices() {
  std::vector<c10::Device> out{c10::Device(c10::kCPU)};
  if (torch::cuda::is_available()) {
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
      out.emplace_back(c10::kCUDA, static_cast<c10::DeviceIndex>(i));
    }
  }
  return out;
}

Tree random_states(const std::vector<c10::Device>& devices) {
  Tree states = Tree::dict();
  for (const c10::Device& device : devices) {
    if (states.find(device.str())) continue;
    auto generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    states.insert(device.str(), generator.get_state());
  }
  return states;
}

void set_random_states(const Tree& states) {
  for (const auto& [name, state] : states.items()) {
    const c10::Device device(name);
    if (device.is_cuda() &&
        (!torch::cuda::is_available() || device.index() >= static_cast<int>(torch::cuda::device_count()))) {
      continue;
    }
    auto generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    try {
      generator.set_state(state.tensor());
    } catch (const c10::Error& e) {
      throw CorruptionError("the random state of " + name +
                            " does not fit its generator: " + e.msg().substr(0, e.msg().find('\n')));
    }
  }
}

}  // namespace kd::checkpoints
