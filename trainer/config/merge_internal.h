// The one rule that puts a value where there is one (a file over its base, an override over the
// files; config/experiment.h states it), and YAML aliases read as copies. Internal to config/.
#pragma once

#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace kd::config::detail {

// A value that a YAML alias (*name) copied from an anchor (&name) in the same file.
struct AliasCopy {
  std::string anchor_key;  // the key the anchor is on ("num_train_steps")
  std::string copy_key;    // the key the alias is on ("optimizer.learning_rate.decay_steps")
  std::string copy_where;  // "file.yaml:12"
};

// Whether `over` merges into `base` key by key rather than replacing it.
bool merges(const YAML::Node& base, const YAML::Node& over);

// Puts `value` at `key_node`'s key of the map `map` by the rule.
void put(YAML::Node map, const YAML::Node& key_node, const YAML::Node& value);

// Puts each of `over`'s keys into `base` by the rule.
void merge_into(YAML::Node base, const YAML::Node& over);

// Replaces the values of `doc` (the file `file`) that YAML aliases share with their anchors by
// copies, each recorded in `copies`.
void copy_aliases(YAML::Node doc, const std::string& file, std::vector<AliasCopy>& copies);

}  // namespace kd::config::detail
