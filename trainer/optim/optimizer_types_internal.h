// What the optimizer types share across their files: optax's optimizers that torch.optim lacks
// (optax_optimizers.cpp), added to optimizer_registry() (torch_optimizers.cpp), and the reading
// of Adam-like betas.
#pragma once

#include <limits>

#include "trainer/config/node.h"
#include "trainer/config/registry.h"
#include "trainer/optim/optimizer_type.h"

namespace kd::optim::detail {

// The upper bound of ranges that have none.
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// lion (optax.lion) and lamb (optax.lamb).
void add_optax_optimizers(config::Registry<OptimizerType>& registry);

// A beta (b1, b2) of `o` at `key`: in [0, 1), ConfigError naming the key otherwise.
double beta(const config::Node& o, const char* key, double def);

}  // namespace kd::optim::detail
