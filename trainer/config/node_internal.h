// Access to the YAML behind a config::Node, for the config module itself (internal).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "trainer/config/node.h"

namespace kd::config {

// Which keys readers asked for, per map (by key path), shared by all nodes of one document.
struct Asked {
  std::map<std::string, std::set<std::string>, std::less<>> keys;
  // The defaults readers took for keys the experiment does not give: dotted key -> YAML text.
  std::map<std::string, std::string> defaults;
};

struct Node::Impl {
  YAML::Node yaml;
  std::string source;  // file name
  std::string path;    // dotted key path
  std::shared_ptr<Asked> asked;
  // For documents merged from several files: each node with the file it came from (later
  // entries win; see config/experiment.cpp).
  std::shared_ptr<const std::vector<std::pair<YAML::Node, std::string>>> origins;
};

}  // namespace kd::config

namespace kd::config::detail {

// Where `yaml`, a node of `impl`'s document, was written: "file.yaml:12:5" or "--cfg.KEY".
std::string where_of(const Node::Impl& impl, const YAML::Node& yaml);

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
