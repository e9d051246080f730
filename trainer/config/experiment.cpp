#include "trainer/config/experiment.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "trainer/common/error.h"
#include "trainer/config/merge_internal.h"
#include "trainer/config/node_internal.h"
#include "trainer/config/references_internal.h"

namespace kd::config {
namespace {

using detail::AliasCopy;
using detail::merge_into;
using detail::merges;
using detail::Origins;
using detail::put;

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

// `value` made absolute relative to `dir` when it is a relative file name.
void absolutize(YAML::Node value, const std::filesystem::path& dir) {
  if (!value.IsScalar()) return;
  const std::string text = value.Scalar();
  // A reference is resolved later, relative to the current directory when it stays relative.
  if (text.empty() || std::filesystem::path(text).is_absolute() || text.rfind("${", 0) == 0) return;
  value = (dir / text).lexically_normal().string();  // writes through: the node keeps its place
}

// Every `path` key's value in `node` (a data source's file, a TorchScript model) is relative to
// `dir`, the directory of the file it is written in (as `base:` is) or, on the command line, the
// current one; made absolute here, so that the experiment saved in a workdir finds them too.
void absolutize_paths(YAML::Node node, const std::filesystem::path& dir) {
  if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == "path") {
        absolutize(it->second, dir);
      } else {
        absolutize_paths(it->second, dir);
      }
    }
  } else if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) absolutize_paths(node[i], dir);
  }
}

YAML::Node parse_file(const std::string& file, std::vector<AliasCopy>& copies) {
  std::ifstream in(file);
  if (!in) throw IOError("cannot read the experiment file \"" + file + "\": no such file or not readable");
  std::stringstream text;
  text << in.rdbuf();
  try {
    YAML::Node yaml = detail::load_bounded(text.str(), file);
    if (!yaml.IsDefined() || yaml.IsNull()) return YAML::Node(YAML::NodeType::Map);
    if (!yaml.IsMap()) throw ConfigError(file + ": an experiment must be a YAML map of keys, e.g. \"seed: 0\"");
    detail::copy_aliases(yaml, file, copies);
    return yaml;
  } catch (const YAML::Exception& e) {
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": invalid YAML: " + e.msg);
  }
}

void reinstate_references(YAML::Node root, const Origins& origins, const std::string& file);

YAML::Node load_with_bases(const std::string& file, Origins& origins, std::vector<std::string>& chain,
                           std::vector<AliasCopy>& copies) {
  const std::string canonical = std::filesystem::weakly_canonical(file).string();
  for (const auto& seen : chain) {
    if (seen == canonical) throw ConfigError(file + ": `base:` files include each other in a cycle");
  }
  chain.push_back(canonical);
  // yaml-cpp's Node::operator= writes through to the node referred to; rebinding a handle
  // takes reset().
  YAML::Node doc = parse_file(file, copies);
  absolutize_paths(doc, std::filesystem::absolute(file).parent_path());
  reinstate_references(doc, origins, file);  // before a file that includes this one sets its keys
  YAML::Node result;
  result.reset(doc);
  if (doc["base"]) {
    const YAML::Node base_node = doc["base"];
    const std::string where = file + ":" + std::to_string(base_node.Mark().line + 1);
    if (!base_node.IsScalar() || base_node.Scalar().empty()) {
      throw ConfigError(where + ": `base` must name an experiment file (relative to this one), e.g. base: common.yaml");
    }
    const auto base_file = (std::filesystem::path(file).parent_path() / base_node.Scalar()).string();
    if (std::error_code ec; std::filesystem::is_directory(base_file, ec)) {
      throw ConfigError(where + ": base: \"" + base_node.Scalar() + "\" is a directory (" + base_file +
                        "); name the experiment file in it, e.g. base: " +
                        (std::filesystem::path(base_node.Scalar()) / "common.yaml").string());
    }
    try {
      result.reset(load_with_bases(base_file, origins, chain, copies));
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

// One step of an override's key: a map key, or an index into a list ("transforms[0]").
struct KeyStep {
  std::string key;  // when index < 0
  int64_t index = -1;
  std::string text() const {
    if (index < 0) return key;
    std::string out = "[";
    out.append(std::to_string(index)).push_back(']');
    return out;
  }
};

// "a.b[0].c" -> a, b, [0], c. ConfigError naming `source` for an empty key or a bad index.
std::vector<KeyStep> parse_key(const std::string& text, const std::string& source) {
  std::vector<KeyStep> steps;
  std::stringstream s(text);
  const auto bad = [&](const std::string& why) {
    return ConfigError(source + ": " + why + " (write --cfg.a.b=value, or --cfg.a.list[0].b=value)");
  };
  if (text.empty() || text.back() == '.') throw bad("empty key in the override");
  for (std::string part; std::getline(s, part, '.');) {
    const auto bracket = part.find('[');
    const std::string key = part.substr(0, bracket);
    if (key.empty()) throw bad("empty key in the override");
    if (key.find(']') != std::string::npos) throw bad("\"]\" without \"[\" in \"" + part + "\"");
    steps.push_back({key});
    for (std::size_t at = bracket; at != std::string::npos;) {
      const auto close = part.find(']', at);
      if (close == std::string::npos) throw bad("\"[\" without \"]\" in \"" + part + "\"");
      const std::string digits = part.substr(at + 1, close - at - 1);
      if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) {
        throw bad("the index in \"" + part + "\" must be a number >= 0");
      }
      steps.push_back({"", std::stoll(digits)});
      at = close + 1;
      if (at == part.size()) break;
      if (part[at] != '[') throw bad("unexpected \"" + part.substr(at) + "\" after \"]\" in \"" + part + "\"");
    }
  }
  return steps;
}

YAML::Node node_at(YAML::Node root, const std::vector<KeyStep>& steps);

void apply_override(YAML::Node root, const Override& o, Origins& origins) {
  const std::string source = "--cfg." + o.first;
  YAML::Node value;
  try {
    value = detail::load_bounded(o.second, source);
  } catch (const YAML::Exception& e) {
    throw ConfigError(source + "=" + o.second + ": the value is not valid YAML: " + e.msg);
  }
  const std::vector<KeyStep> steps = parse_key(o.first, source);
  if (value.IsNull() && !node_at(root, steps).IsDefined()) return;  // nothing there to remove
  if (steps.back().index < 0 && steps.back().key == "path") {
    absolutize(value, std::filesystem::current_path());
  } else {
    absolutize_paths(value, std::filesystem::current_path());
  }
  std::string walked;  // the key so far, for errors
  YAML::Node node;
  node.reset(root);
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const KeyStep& step = steps[i];
    const bool last = i + 1 == steps.size();
    if (step.index >= 0) {
      if (!node.IsSequence()) {
        throw ConfigError(source + ": \"" + walked + "\" is not a list in the experiment, so it has no element " +
                          step.text());
      }
      if (static_cast<std::size_t>(step.index) >= node.size()) {
        throw ConfigError(source + ": \"" + walked + "\" has " + std::to_string(node.size()) + " element" +
                          (node.size() == 1 ? "" : "s") +
                          (node.size() == 0 ? "" : " (indices 0 to " + std::to_string(node.size() - 1) + ")") +
                          ", not " + step.text());
      }
      if (last) {
        YAML::Node element = node[static_cast<std::size_t>(step.index)];
        if (merges(element, value)) {
          merge_into(element, value);
        } else {
          node[static_cast<std::size_t>(step.index)] = value;
        }
      } else {
        YAML::Node child = node[static_cast<std::size_t>(step.index)];
        node.reset(child);
      }
    } else {
      if (!node.IsMap()) {
        throw ConfigError(source + ": \"" + walked + "\" is not a map in the experiment, so it has no key \"" +
                          step.key + "\"");
      }
      if (last) {
        put(node, YAML::Node(step.key), value);
      } else {
        YAML::Node child = node[step.key];
        if (!child.IsDefined() || child.IsNull()) {
          if (steps[i + 1].index >= 0) {
            throw ConfigError(source + ": the experiment has no list \"" + walked + (walked.empty() ? "" : ".") +
                              step.key + "\" to index");
          }
          node[step.key] = YAML::Node(YAML::NodeType::Map);
          child.reset(node[step.key]);
          for (auto it = node.begin(); it != node.end(); ++it) {
            if (it->first.Scalar() == step.key && it->first.Mark().is_null()) origins.emplace_back(it->first, source);
          }
        }
        node.reset(child);
      }
    }
    if (step.index < 0 && !walked.empty()) walked.push_back('.');
    walked.append(step.text());
  }
  record_origins(value, source, origins);
  // A key the override adds is the override's (an unknown one is then blamed on it, not on the file).
  if (steps.back().index < 0) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it->first.Scalar() == steps.back().key && it->first.Mark().is_null()) origins.emplace_back(it->first, source);
    }
  }
}

// The node at a key written as references and overrides write it ("a.b[0].c"), or an undefined
// node.
YAML::Node node_at(YAML::Node root, const std::vector<KeyStep>& steps) {
  YAML::Node node;
  node.reset(root);
  for (const KeyStep& step : steps) {
    YAML::Node child;
    if (step.index >= 0) {
      if (!node.IsSequence() || static_cast<std::size_t>(step.index) >= node.size()) {
        return YAML::Node(YAML::NodeType::Undefined);
      }
      child.reset(node[static_cast<std::size_t>(step.index)]);
    } else {
      if (!node.IsMap() || !static_cast<const YAML::Node&>(node)[step.key])
        return YAML::Node(YAML::NodeType::Undefined);
      child.reset(node[step.key]);
    }
    node.reset(child);
  }
  return node;
}

constexpr const char* kReferencesKey = "references";

// A saved experiment (a workdir's config.yaml) holds each value written as a reference resolved,
// and under `references:` the reference itself: put back in the file's own keys when the file is
// read (before what includes it and the overrides), so that a rerun with an override follows it.
void reinstate_references(YAML::Node root, const Origins& origins, const std::string& file) {
  const YAML::Node saved = static_cast<const YAML::Node&>(root)[kReferencesKey];
  if (!saved) return;
  const std::string where = detail::where_in(origins, saved, file);
  if (!saved.IsMap()) {
    throw ConfigError(where +
                      ": `references` is where kd keeps the values an experiment wrote as ${...}: a map "
                      "of key: \"${...}\" (or leave it out)");
  }
  for (auto it = saved.begin(); it != saved.end(); ++it) {
    const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
    const std::string at = detail::where_in(origins, it->first, file);
    if (!it->second.IsScalar() || it->second.Scalar().find("${") == std::string::npos) {
      throw ConfigError(at + ": references." + key + " must be the reference as written, e.g. \"${num_train_steps}\"");
    }
    YAML::Node target = node_at(root, parse_key(key, at));
    if (!target.IsDefined()) {
      throw ConfigError(at + ": references names \"" + key +
                        "\", which is not in the experiment; remove the line or add the key");
    }
    target = it->second.Scalar();
  }
  root.remove(kReferencesKey);
}

bool within(const std::string& key, const std::string& prefix) {
  return key == prefix || (key.size() > prefix.size() && key.rfind(prefix, 0) == 0 &&
                           (key[prefix.size()] == '.' || key[prefix.size()] == '['));
}

// A warning for each value that a YAML alias copied from what override `o` changes, unless an
// override sets the copy too.
void warn_about_copies(const Override& o, const std::vector<Override>& overrides, const std::vector<AliasCopy>& copies,
                       std::vector<std::string>& warnings) {
  for (const AliasCopy& c : copies) {
    if (!within(o.first, c.anchor_key) && !within(c.anchor_key, o.first)) continue;
    const bool copy_set = std::any_of(overrides.begin(), overrides.end(), [&](const Override& other) {
      return within(other.first, c.copy_key) || within(c.copy_key, other.first);
    });
    if (copy_set) continue;
    const auto dot = c.copy_key.find_last_of('.');
    const std::string last = dot == std::string::npos ? c.copy_key : c.copy_key.substr(dot + 1);
    warnings.push_back("--cfg." + o.first + " changes \"" + c.anchor_key + "\", which a YAML alias (*) copied into \"" +
                       c.copy_key + "\" at " + c.copy_where + ": \"" + c.copy_key +
                       "\" keeps the file's value. To have it follow, write `" + last + ": ${" + c.anchor_key +
                       "}` there instead of the alias (or override --cfg." + c.copy_key + " too)");
  }
}

}  // namespace

Node load_experiment(const std::string& file, const std::vector<Override>& overrides,
                     std::vector<std::string>* warnings) {
  auto origins = std::make_shared<Origins>();
  std::vector<std::string> chain;
  std::vector<AliasCopy> copies;
  YAML::Node root = load_with_bases(file, *origins, chain, copies);
  for (const auto& o : overrides) {
    apply_override(root, o, *origins);
    if (warnings) warn_about_copies(o, overrides, copies, *warnings);
  }
  const std::vector<detail::Reference> references = detail::resolve_references(root, *origins, file);
  if (!references.empty()) {
    YAML::Node saved(YAML::NodeType::Map);
    for (const auto& r : references) saved[r.key] = r.text;
    root[kReferencesKey] = saved;
  }
  return detail::make_document(root, file, origins);
}

std::vector<Override> parse_overrides(const std::vector<std::string>& args, std::vector<std::string>* rest) {
  std::vector<Override> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--cfg.", 0) == 0) {
      const auto eq = a.find('=');
      if (eq != std::string::npos) {
        out.emplace_back(a.substr(6, eq - 6), a.substr(eq + 1));
      } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {  // --cfg.key value
        out.emplace_back(a.substr(6), args[i + 1]);
        ++i;
      } else {
        throw ConfigError(a + ": an override needs a value: " + a + "=VALUE or " + a + " VALUE");
      }
    } else if (rest) {
      rest->push_back(a);
    }
  }
  return out;
}

}  // namespace kd::config
