// Access to the YAML behind a config::Node, for the config module itself (internal).
#pragma once

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

}  // namespace kd::config::detail
