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

#include <cstdint>
#include <functional>
#include <string>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "trainer/common/error.h"
#include "trainer/tree/tree.h"

namespace kd {

// A JSON number read from outside (a checkpoint, a manifest) as the integer it must be:
// kd::CorruptionError naming `what` for anything else, for an integer outside int64 (or, for
// json_size, below 0), and for a fraction or an exponent such as 1e75 (nlohmann's own get<>()
// would convert those with undefined behaviour).
template <typename Json>
int64_t json_int(const Json& j, const std::string& what) {
  if (j.is_number_unsigned()) {
    if (j.template get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX))
      return static_cast<int64_t>(j.template get<uint64_t>());
  } else if (j.is_number_integer()) {
    return j.template get<int64_t>();
  }
  throw CorruptionError(what + " is not an integer of 64 bits: " + j.dump().substr(0, 40));
}
template <typename Json>
uint64_t json_size(const Json& j, const std::string& what) {
  if (j.is_number_unsigned()) return j.template get<uint64_t>();
  throw CorruptionError(what + " is not a size: " + j.dump().substr(0, 40));
}

nlohmann::ordered_json tree_to_json(const Tree& tree,
                                    const std::function<nlohmann::ordered_json(const torch::Tensor&)>& on_tensor);
Tree tree_from_json(const nlohmann::ordered_json& j,
                    const std::function<torch::Tensor(const nlohmann::ordered_json&)>& on_tensor);

}  // namespace kd
