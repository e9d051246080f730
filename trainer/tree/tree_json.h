// Trees as JSON skeletons, with the tensors kept elsewhere: `on_tensor` gives the JSON that
// stands for a tensor (e.g. its key in an archive) and turns it back into the tensor.
//
//   none -> null     int -> {"i": 3}      float -> {"f": 0.5}     string -> {"s": "x"}
//   tensor -> {"t": on_tensor(t)}         dict -> {"d": [[key, node], ...]}  (in order)
//   list -> {"l": [node, ...]}
//
// Used by checkpoints (meta.json) and by ranks exchanging states. tree_from_json throws
// kd::CorruptionError for a skeleton that is not one (deeper than 64 levels, malformed nodes) and
// nlohmann::json::exception for wrongly typed values.
#pragma once

#include <functional>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "trainer/tree/tree.h"

namespace kd {

nlohmann::ordered_json tree_to_json(const Tree& tree,
                                    const std::function<nlohmann::ordered_json(const torch::Tensor&)>& on_tensor);
Tree tree_from_json(const nlohmann::ordered_json& j,
                    const std::function<torch::Tensor(const nlohmann::ordered_json&)>& on_tensor);

}  // namespace kd
