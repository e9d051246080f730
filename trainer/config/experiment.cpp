#include "trainer/config/experiment.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "trainer/common/error.h"
#include "trainer/config/node_internal.h"

namespace kd::config {
namespace {

using Origins = std::vector<std::pair<YAML::Node, std::string>>;

void record_origins(const YAML::Node& node, const std::string& source, Origins& origins) {
  origins.emplace_back(node, source);
  if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      origins.emplace_back(it->first, source);
      record_origins(it->second, source, origins);
    }
  } else if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) record_origins(node[i], source, origins);
  }
}

// A component map whose `type` differs from the base's is a different component: it replaces
// the base's map instead of inheriting its options.
bool same_component(const YAML::Node& a, const YAML::Node& b) {
  const YAML::Node ta = a["type"], tb = b["type"];
  return !ta || !tb || !ta.IsScalar() || !tb.IsScalar() || ta.Scalar() == tb.Scalar();
}

// Merges `over` into `base`: maps key by key, anything else replaced.
void merge_into(YAML::Node base, const YAML::Node& over) {
  for (auto it = over.begin(); it != over.end(); ++it) {
    const std::string key = it->first.Scalar();
    YAML::Node existing = base[key];
    if (existing.IsDefined() && existing.IsMap() && it->second.IsMap() && same_component(existing, it->second)) {
      merge_into(existing, it->second);
    } else if (existing.IsDefined()) {
      base[key] = it->second;
    } else {
      base.remove(key);                          // operator[] above added an empty entry
      base.force_insert(it->first, it->second);  // keeps the key's own file position
    }
  }
}

YAML::Node parse_file(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw IOError("cannot read the experiment file \"" + file + "\": no such file or not readable");
  std::stringstream text;
  text << in.rdbuf();
  try {
    YAML::Node yaml = detail::load_bounded(text.str(), file);
    if (!yaml.IsDefined() || yaml.IsNull()) return YAML::Node(YAML::NodeType::Map);
    if (!yaml.IsMap()) throw ConfigError(file + ": an experiment must be a YAML map of keys, e.g. \"seed: 0\"");
    return yaml;
  } catch (const YAML::Exception& e) {
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": invalid YAML: " + e.msg);
  }
}

YAML::Node load_with_bases(const std::string& file, Origins& origins, std::vector<std::string>& chain) {
  const std::string canonical = std::filesystem::weakly_canonical(file).string();
  for (const auto& seen : chain) {
    if (seen == canonical) throw ConfigError(file + ": `base:` files include each other in a cycle");
  }
  chain.push_back(canonical);
  // yaml-cpp's Node::operator= writes through to the node referred to; rebinding a handle
  // takes reset().
  YAML::Node doc = parse_file(file);
  YAML::Node result;
  result.reset(doc);
  if (doc["base"]) {
    const YAML::Node base_node = doc["base"];
    if (!base_node.IsScalar()) throw ConfigError(file + ": `base` must be a file name");
    const auto base_file = (std::filesystem::path(file).parent_path() / base_node.Scalar()).string();
    try {
      result.reset(load_with_bases(base_file, origins, chain));
    } catch (Error& e) {
      e.add_context(file + ":" + std::to_string(base_node.Mark().line + 1) + ": base: " + base_node.Scalar());
      throw;
    }
    doc.remove("base");
    record_origins(doc, file, origins);
    merge_into(result, doc);
  } else {
    record_origins(doc, file, origins);
  }
  chain.pop_back();
  return result;
}

void apply_override(YAML::Node root, const Override& o, Origins& origins) {
  const std::string source = "--cfg." + o.first;
  YAML::Node value;
  try {
    value = detail::load_bounded(o.second, source);
  } catch (const YAML::Exception& e) {
    throw ConfigError(source + "=" + o.second + ": the value is not valid YAML: " + e.msg);
  }
  std::vector<std::string> keys;
  std::stringstream s(o.first);
  for (std::string k; std::getline(s, k, '.');) keys.push_back(k);
  if (o.first.empty() || o.first.back() == '.' ||
      std::any_of(keys.begin(), keys.end(), [](const std::string& k) { return k.empty(); })) {
    throw ConfigError(source + ": empty key in the override (write --cfg.a.b=value)");
  }
  YAML::Node node;
  node.reset(root);
  for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
    YAML::Node child = node[keys[i]];
    if (!child.IsDefined() || child.IsNull()) {
      node[keys[i]] = YAML::Node(YAML::NodeType::Map);
      child.reset(node[keys[i]]);
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (it->first.Scalar() == keys[i] && it->first.Mark().is_null()) origins.emplace_back(it->first, source);
      }
    } else if (!child.IsMap()) {
      throw ConfigError(source + ": \"" + keys[i] + "\" is not a map in the experiment, so it has no key \"" +
                        keys[i + 1] + "\"");
    }
    node.reset(child);
  }
  node[keys.back()] = value;
  record_origins(value, source, origins);
  // A key the override adds is the override's (an unknown one is then blamed on it, not on the file).
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (it->first.Scalar() == keys.back() && it->first.Mark().is_null()) origins.emplace_back(it->first, source);
  }
}

}  // namespace

Node load_experiment(const std::string& file, const std::vector<Override>& overrides) {
  auto origins = std::make_shared<Origins>();
  std::vector<std::string> chain;
  YAML::Node root = load_with_bases(file, *origins, chain);
  for (const auto& o : overrides) apply_override(root, o, *origins);
  return detail::make_document(root, file, origins);
}

std::vector<Override> parse_overrides(const std::vector<std::string>& args, std::vector<std::string>* rest) {
  std::vector<Override> out;
  for (const auto& a : args) {
    if (a.rfind("--cfg.", 0) == 0) {
      const auto eq = a.find('=');
      if (eq == std::string::npos) throw ConfigError(a + ": an override needs a value: " + a + "=VALUE");
      out.emplace_back(a.substr(6, eq - 6), a.substr(eq + 1));
    } else if (rest) {
      rest->push_back(a);
    }
  }
  return out;
}

}  // namespace kd::config
