// kd config: the experiment as a run would use it. The Trainer is built for kDescribe, so that
// every component reads (and checks) its keys and takes its defaults; then every value is
// printed with where it comes from: file:line, the override (--cfg.key), or "default".
#include <charconv>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/logger.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "trainer/cli/commands_internal.h"

namespace kd::cli {
namespace {

// One value. No YAML::Node here: entries move in a vector, and a YAML::Node assigned to writes
// into the node it refers to.
struct Entry {
  std::string key;
  nlohmann::json value;
  std::string text;    // the value as YAML flow text
  std::string source;  // "file.yaml:12", "--cfg.key" or "default"
  std::string reference;
};

nlohmann::json to_json(const YAML::Node& node);

bool under(const std::string& key, const std::string& parent) {
  return parent.empty() || (key.size() > parent.size() && key.rfind(parent, 0) == 0 &&
                            (key[parent.size()] == '.' || key[parent.size()] == '['));
}

std::string parent_of(const std::string& key) {
  const auto cut = key.find_last_of(".[");
  return cut == std::string::npos ? "" : key.substr(0, cut);
}

// Each default after the written values of its nearest written ancestor (at the end when none).
void insert_defaults(const std::vector<std::pair<std::string, std::string>>& defaults, std::vector<Entry>& entries) {
  for (const auto& [key, text] : defaults) {
    bool written = false;
    for (const Entry& e : entries) written = written || e.key == key || under(e.key, key);
    if (written) continue;
    Entry entry{key, to_json(YAML::Load(text)), text, "default", ""};
    auto at = entries.end();
    for (std::string parent = parent_of(key); at == entries.end(); parent = parent_of(parent)) {
      for (auto it = entries.begin(); it != entries.end(); ++it) {
        if (under(it->key, parent)) at = it + 1;
      }
      if (parent.empty()) break;
    }
    entries.insert(at, std::move(entry));
  }
}

nlohmann::json to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto it = node.begin(); it != node.end(); ++it) out[it->first.Scalar()] = to_json(it->second);
    return out;
  }
  if (node.IsSequence()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& element : node) out.push_back(to_json(element));
    return out;
  }
  if (!node.IsScalar()) return nullptr;
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted: text
  if (s == "null" || s == "~" || s.empty()) return nullptr;
  if (s == "true" || s == "false") return s == "true";
  int64_t i = 0;
  if (auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), i); ec == std::errc() && p == s.data() + s.size()) {
    return i;
  }
  double d = 0;
  if (auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d); ec == std::errc() && p == s.data() + s.size()) {
    return d;
  }
  return s;
}

}  // namespace

int run_config(const std::string& cfg, const std::vector<std::string>& extras, bool json,
               std::shared_ptr<spdlog::logger> log) {
  const config::Node experiment = load(cfg, extras, log.get());
  {  // every component built: each key read and checked, each default taken; nothing written
    auto quiet = std::make_shared<spdlog::logger>("kd-config");
    quiet->set_level(spdlog::level::off);
    const train::Trainer described(experiment, quiet, train::Trainer::Purpose::kDescribe);
  }
  std::vector<Entry> entries;
  for (const config::Node::Leaf& leaf : experiment.leaves({"references"})) {
    entries.push_back({leaf.key, to_json(YAML::Load(leaf.text)), leaf.text, leaf.where, ""});
  }
  insert_defaults(experiment.defaults_taken(), entries);
  if (const auto references = experiment.find("references"); references && references->is_map()) {
    for (Entry& e : entries) {
      if (references->has(e.key)) e.reference = references->get_string(e.key);
    }
  }
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Entry& e : entries) {
      nlohmann::json item = {{"key", e.key}, {"value", e.value}, {"source", e.source}};
      if (!e.reference.empty()) item["reference"] = e.reference;
      out.push_back(std::move(item));
    }
    std::cout << out.dump(1) << "\n";
    return 0;
  }
  std::size_t width = 0;
  for (const Entry& e : entries) width = std::max(width, std::min<std::size_t>(e.key.size() + 2 + e.text.size(), 56));
  std::cout << "# " << cfg << " as a run would use it: every value, with where it comes from\n";
  for (const Entry& e : entries) {
    const std::string line = e.key + ": " + e.text;
    std::cout << line << std::string(line.size() < width ? width - line.size() : 0, ' ') << "  # " << e.source
              << (e.reference.empty() ? "" : " = " + e.reference) << "\n";
  }
  return 0;
}

}  // namespace kd::cli
