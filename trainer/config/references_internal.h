// References between an experiment's keys, resolved once its files and overrides are merged
// (the syntax: config/experiment.h). Internal to the config module.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace kd::config::detail {

// Nodes with the file (or override) each came from; later entries win (config/experiment.cpp).
using Origins = std::vector<std::pair<YAML::Node, std::string>>;

// "file.yaml:12:5" of `node` (its origin's name alone for an override or a node without a mark).
std::string where_in(const Origins& origins, const YAML::Node& node, const std::string& fallback);

// A value written as a reference: its dotted key ("optimizer.learning_rate.decay_steps") and its
// text as written ("${num_train_steps}").
struct Reference {
  std::string key;
  std::string text;
};

// Replaces every `${...}` in the scalars under `root` by its value, in place, and returns the
// values resolved, in document order. kd::ConfigError naming the value's file:line for a key that
// does not exist (with the nearest one), a cycle (its chain of keys), an expression that does not
// parse, arithmetic on something that is not a number, a division by zero, an overflow.
std::vector<Reference> resolve_references(YAML::Node root, const Origins& origins, const std::string& fallback);

// The dotted key of a list element or map key as references write it: "a.b[0].c".
std::string join_key(const std::string& parent, std::string_view key);
std::string join_index(const std::string& parent, std::size_t index);

}  // namespace kd::config::detail
