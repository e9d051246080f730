// The optimizers of optax that torch.optim lacks (optax_optimizers.cpp), added to the registry
// by optimizer_registry().
#pragma once

#include "trainer/config/registry.h"
#include "trainer/optim/optimizer_type.h"

namespace kd::optim::detail {

// lion (optax.lion) and lamb (optax.lamb).
void add_optax_optimizers(config::Registry<OptimizerType>& registry);

}  // namespace kd::optim::detail
