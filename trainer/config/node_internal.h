// Access to the YAML behind a config::Node, for the config module itself (internal).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "trainer/config/node.h"

namespace kd::config::detail {

// A document whose nodes may come from several files: `origins` lists nodes with their file.
Node make_document(YAML::Node yaml, std::string source,
                   std::shared_ptr<const std::vector<std::pair<YAML::Node, std::string>>> origins);

const YAML::Node& yaml_of(const Node& node);

// YAML::Load, bounded: a document nested deeper than kMaxDepth (e.g. a self-referential alias,
// `a: &a [*a]`) or that expands to more than kMaxNodes nodes through aliases (an alias "bomb")
// is a ConfigError naming `source`. Every YAML text kd reads goes through it.
inline constexpr int kMaxDepth = 64;
inline constexpr int64_t kMaxNodes = 100'000;
YAML::Node load_bounded(const std::string& text, const std::string& source);

}  // namespace kd::config::detail
