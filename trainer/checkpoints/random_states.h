// The states of LibTorch's default random generators, as a tree by device name
// ({"cpu": uint8[...], "cuda:0": ...}): saved in every checkpoint (all of this machine's
// devices) and exchanged between the ranks of a job (the CPU and the training device).
#pragma once

#include <vector>

#include <c10/core/Device.h>

#include "trainer/tree/tree.h"

namespace kd::checkpoints {

// The CPU and every GPU LibTorch sees.
std::vector<c10::Device> generator_devices();

// The state of each device's default generator (a device named twice is taken once).
Tree random_states(const std::vector<c10::Device>& devices);

// Restores states random_states returned. A GPU this machine does not have (a run resumed
// elsewhere) is skipped; a state of the wrong size is kd::CorruptionError.
void set_random_states(const Tree& states);

}  // namespace kd::checkpoints
