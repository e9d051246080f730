// kd::train::Auxiliaries: the losses, metrics and summaries of a step, each by name, and what
// they do with their states (context/auxiliaries_state.h): a step returns an AuxiliariesState;
// states of successive steps (or eval batches, or ranks) are merged, and compute_* turns the
// merged state into the values to log:
//   losses/<name>, losses/total, metrics/<name>[/<sub.path>], and the summaries.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trainer/context/auxiliaries_state.h"
#include "trainer/tree/tree.h"

namespace kd::losses {
class Loss;
}
namespace kd::metrics {
class Metric;
}
namespace kd::summaries {
class Summary;
}
namespace kd::config {
class Node;
}

namespace kd::train {

template <typename T>
using Named = std::vector<std::pair<std::string, std::shared_ptr<const T>>>;

struct Auxiliaries {
  Named<losses::Loss> losses;
  Named<metrics::Metric> metrics;
  Named<summaries::Summary> summaries;

  // Every path any of them reads, in order (losses, metrics, summaries).
  std::vector<Path> paths() const;
  // Every path the metrics and summaries read (they run after the optimizer step).
  std::vector<Path> paths_after_update() const;
};

// Builds the named losses, metrics and summaries from YAML maps (name -> {type: ..., ...}), as
// config::Node::section gives them (an empty map: none).
Auxiliaries build_auxiliaries(const config::Node& losses, const config::Node& metrics, const config::Node& summaries);

// True when some path reads the context field `field` (a leading glob reads every field).
bool reads_field(const std::vector<Path>& paths, std::string_view field);

// The state of both: every entry merged by its owner (the state's auxiliaries); either side may
// be empty.
AuxiliariesState merge(const AuxiliariesState& a, const AuxiliariesState& b);

// "losses/<name>", "losses/total" and "metrics/<name>" (a tree-valued metric gives one entry per
// leaf, "metrics/<name>/<leaf path>"), as scalars.
std::vector<std::pair<std::string, double>> compute_scalars(const AuxiliariesState& state);

struct SummaryValue {
  std::string name;  // "summaries/<name>"
  const summaries::Summary* summary;
  Tree value;  // see Summary::Kind
};
std::vector<SummaryValue> compute_summaries(const AuxiliariesState& state);

}  // namespace kd::train
