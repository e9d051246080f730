// A document's values as a whole: its leaves with where each was written (kd config), the
// defaults its readers took, its scalars flattened (comparing two experiments), its YAML text.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "trainer/config/node.h"
#include "trainer/config/node_internal.h"
#include "trainer/config/references_internal.h"

namespace kd::config {

namespace {

std::string flow_text(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

// "file.yaml:12:5" -> "file.yaml:12".
std::string without_column(const std::string& where) {
  const auto last = where.rfind(':');
  if (last == std::string::npos || where.rfind("--cfg", 0) == 0) return where;
  const auto before = where.rfind(':', last - 1);
  const bool two_numbers = before != std::string::npos && last > before + 1 &&
                           where.find_first_not_of("0123456789", before + 1) == last &&
                           where.find_first_not_of("0123456789", last + 1) == std::string::npos;
  return two_numbers ? where.substr(0, last) : where;
}

void collect_leaves(const Node::Impl& impl, const YAML::Node& node, const std::string& key,
                    const std::vector<std::string>& skip, std::vector<Node::Leaf>& out) {
  bool scalars_only = true;
  if (node.IsSequence()) {
    for (const auto& element : node) scalars_only = scalars_only && (element.IsScalar() || element.IsNull());
  }
  const bool leaf = !(node.IsMap() && node.size() > 0) && !(node.IsSequence() && node.size() > 0 && !scalars_only);
  if (leaf) {
    out.push_back({key, flow_text(node), without_column(detail::where_of(impl, node))});
  } else if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string name = it->first.Scalar();
      if (key.empty() && std::find(skip.begin(), skip.end(), name) != skip.end()) continue;
      collect_leaves(impl, it->second, detail::join_key(key, name), skip, out);
    }
  } else {
    for (std::size_t i = 0; i < node.size(); ++i) {
      collect_leaves(impl, node[i], key + "[" + std::to_string(i) + "]", skip, out);
    }
  }
}

void flatten_into(const YAML::Node& node, const std::string& prefix,
                  std::vector<std::pair<std::string, std::string>>& out) {
  if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      flatten_into(it->second, detail::join_key(prefix, it->first.Scalar()), out);
    }
    return;
  }
  if (node.IsScalar()) {
    out.emplace_back(prefix, node.Scalar());
    return;
  }
  if (node.IsSequence()) {
    out.emplace_back(prefix, flow_text(node));
    return;
  }
  out.emplace_back(prefix, "null");
}

}  // namespace

std::vector<Node::Leaf> Node::leaves(const std::vector<std::string>& skip) const {
  std::vector<Leaf> out;
  collect_leaves(*impl_, impl_->yaml, impl_->path, skip, out);
  return out;
}

std::vector<std::pair<std::string, std::string>> Node::defaults_taken() const {
  return {impl_->asked->defaults.begin(), impl_->asked->defaults.end()};
}

std::vector<std::pair<std::string, std::string>> Node::flatten() const {
  std::vector<std::pair<std::string, std::string>> out;
  flatten_into(impl_->yaml, "", out);
  return out;
}

std::string Node::to_yaml() const {
  YAML::Emitter out;
  out << impl_->yaml;
  return out.c_str();
}

}  // namespace kd::config
