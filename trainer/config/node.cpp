#include "trainer/config/node.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>

#include <yaml-cpp/yaml.h>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/config/node_internal.h"
#include "trainer/config/references_internal.h"

namespace kd::config {

std::string detail::where_of(const Node::Impl& impl, const YAML::Node& yaml) {
  return impl.origins ? detail::where_in(*impl.origins, yaml, impl.source) : detail::where_in({}, yaml, impl.source);
}

namespace {

std::string scalar_text(const YAML::Node& yaml) {
  if (yaml.IsScalar()) return "\"" + yaml.Scalar() + "\"";
  if (yaml.IsMap()) return "a map";
  if (yaml.IsSequence()) return "a list";
  return "nothing";
}

template <typename T>
T convert(const Node::Impl& impl, const YAML::Node& yaml, const std::string& key_path, const char* expected) {
  if (yaml.IsScalar()) {
    try {
      return yaml.as<T>();
    } catch (const YAML::Exception&) {
    }
  }
  throw ConfigError(detail::where_of(impl, yaml) + ": \"" + key_path + "\" must be " + expected + ", but it is " +
                    scalar_text(yaml));
}

std::shared_ptr<Node::Impl> make(
    YAML::Node yaml, std::string source, std::string path, std::shared_ptr<Asked> asked,
    std::shared_ptr<const std::vector<std::pair<YAML::Node, std::string>>> origins = nullptr) {
  auto impl = std::make_shared<Node::Impl>();
  impl->yaml = std::move(yaml);
  impl->source = std::move(source);
  impl->path = std::move(path);
  impl->asked = std::move(asked);
  impl->origins = std::move(origins);
  return impl;
}

// A child node of `parent`'s document.
std::shared_ptr<Node::Impl> make_child(const Node::Impl& parent, YAML::Node yaml, std::string path) {
  return make(std::move(yaml), parent.source, std::move(path), parent.asked, parent.origins);
}

}  // namespace

Node::Node() : impl_(make(YAML::Node(YAML::NodeType::Map), "<defaults>", "", std::make_shared<Asked>())) {}

YAML::Node detail::load_bounded(const std::string& text, const std::string& source) {
  YAML::Node root = YAML::Load(text);
  // Walked without recursion: an alias may make the document a cycle.
  std::vector<std::pair<YAML::Node, int>> todo{{root, 0}};
  int64_t nodes = 0;
  while (!todo.empty()) {
    auto [node, depth] = todo.back();
    todo.pop_back();
    if (++nodes > kMaxNodes) {
      throw ConfigError(source + ": the YAML expands to more than " + std::to_string(kMaxNodes) +
                        " nodes through its aliases (*name); write the values out or use fewer aliases");
    }
    if (depth > kMaxDepth) {
      throw ConfigError(source + ":" + std::to_string(node.Mark().line + 1) + ":" +
                        std::to_string(node.Mark().column + 1) + ": the YAML is nested deeper than " +
                        std::to_string(kMaxDepth) + " levels (an alias that contains itself, such as `a: &a [*a]`?)");
    }
    if (node.IsMap()) {
      // A key given twice: yaml-cpp would keep one of them without a word.
      std::map<std::string, YAML::Mark> seen;
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (it->first.IsScalar()) {
          const auto [first, fresh] = seen.emplace(it->first.Scalar(), it->first.Mark());
          if (!fresh) {
            throw ConfigError(source + ":" + std::to_string(it->first.Mark().line + 1) + ":" +
                              std::to_string(it->first.Mark().column + 1) + ": the key \"" + it->first.Scalar() +
                              "\" is given twice in one map (lines " + std::to_string(first->second.line + 1) +
                              " and " + std::to_string(it->first.Mark().line + 1) + "); keep one");
          }
        }
        todo.emplace_back(it->first, depth + 1);
        todo.emplace_back(it->second, depth + 1);
      }
    } else if (node.IsSequence()) {
      for (auto it = node.begin(); it != node.end(); ++it) todo.emplace_back(*it, depth + 1);
    }
  }
  return root;
}

Node Node::parse(const std::string& text, const std::string& source_name) {
  try {
    YAML::Node yaml = detail::load_bounded(text, source_name);
    if (!yaml.IsDefined() || yaml.IsNull()) yaml = YAML::Node(YAML::NodeType::Map);
    return Node(make(std::move(yaml), source_name, "", std::make_shared<Asked>()));
  } catch (const YAML::Exception& e) {
    throw ConfigError(source_name + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": invalid YAML: " + e.msg);
  }
}

Node Node::load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IOError("cannot read the experiment file \"" + path + "\": no such file or not readable");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

bool Node::is_map() const { return impl_->yaml.IsMap(); }
bool Node::is_sequence() const { return impl_->yaml.IsSequence(); }
bool Node::is_scalar() const { return impl_->yaml.IsScalar(); }
bool Node::is_null() const { return !impl_->yaml.IsDefined() || impl_->yaml.IsNull(); }

// A node read as a map must be one (or be empty): `checkpointer: 5` or `evals: [test]` are
// errors, not sections silently left at their defaults.
static void require_map(const Node::Impl& impl, std::string_view key) {
  if (impl.yaml.IsMap() || !impl.yaml.IsDefined() || impl.yaml.IsNull()) return;
  throw ConfigError(detail::where_of(impl, impl.yaml) + ": \"" + (impl.path.empty() ? "the experiment" : impl.path) +
                    "\" must be a map of keys (such as \"" + std::string(key) + "\"), but it is " +
                    scalar_text(impl.yaml));
}

Node Node::section(std::string_view key) const {
  auto found = find(key);
  if (found && !found->is_null()) return *found;
  // An empty map of this document at `key` (its defaults are recorded under the key's path).
  return Node(make_child(*impl_, YAML::Node(YAML::NodeType::Map), detail::join_key(impl_->path, key)));
}

std::optional<Node> Node::find(std::string_view key) const {
  impl_->asked->keys[impl_->path].insert(std::string(key));
  require_map(*impl_, key);
  if (!impl_->yaml.IsMap()) return std::nullopt;
  const YAML::Node& map = impl_->yaml;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (it->first.Scalar() == key) {
      return Node(make_child(*impl_, it->second, detail::join_key(impl_->path, key)));
    }
  }
  return std::nullopt;
}

bool Node::has(std::string_view key) const { return find(key).has_value(); }

Node Node::child(std::string_view key) const {
  if (auto n = find(key)) return *n;
  const std::string full = detail::join_key(impl_->path, key);
  if (!impl_->yaml.IsMap()) {
    throw ConfigError(where() + ": \"" + (impl_->path.empty() ? "the document" : impl_->path) +
                      "\" must be a map with the key \"" + std::string(key) + "\", but it is " +
                      scalar_text(impl_->yaml));
  }
  std::string message = where() + ": missing required key \"" + full + "\"";
  const auto close = nearest(key, keys(), 1);
  if (!close.empty()) message += "; found \"" + close.front() + "\". Did you mean \"" + std::string(key) + "\"?";
  throw ConfigError(message);
}

std::vector<std::string> Node::keys() const {
  std::vector<std::string> out;
  require_map(*impl_, "name");
  if (!impl_->yaml.IsMap()) return out;
  for (auto it = impl_->yaml.begin(); it != impl_->yaml.end(); ++it) out.push_back(it->first.Scalar());
  return out;
}

std::size_t Node::size() const { return impl_->yaml.size(); }

std::vector<Node> Node::elements() const {
  std::vector<Node> out;
  if (!impl_->yaml.IsSequence()) {
    throw ConfigError(where() + ": \"" + impl_->path + "\" must be a list, but it is " + scalar_text(impl_->yaml));
  }
  for (std::size_t i = 0; i < impl_->yaml.size(); ++i) {
    out.emplace_back(make_child(*impl_, impl_->yaml[i], impl_->path + "[" + std::to_string(i) + "]"));
  }
  return out;
}

// No key of kd takes an infinity or a NaN (.inf, .nan in YAML): each is refused where it is read.
double Node::as_double() const {
  const double v = convert<double>(*impl_, impl_->yaml, impl_->path, "a number");
  if (!std::isfinite(v)) {
    throw ConfigError(where() + ": \"" + impl_->path + "\" must be a finite number, but it is " +
                      scalar_text(impl_->yaml));
  }
  return v;
}
int64_t Node::as_int() const { return convert<int64_t>(*impl_, impl_->yaml, impl_->path, "an integer"); }
bool Node::as_bool() const { return convert<bool>(*impl_, impl_->yaml, impl_->path, "true or false"); }
std::string Node::as_string() const { return convert<std::string>(*impl_, impl_->yaml, impl_->path, "a string"); }

namespace {

std::string default_text(double v) {
  char buffer[64];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  return std::string(buffer, end);
}
std::string default_text(int64_t v) { return std::to_string(v); }
std::string default_text(bool v) { return v ? "true" : "false"; }
std::string default_text(const std::string& v) {
  YAML::Emitter out;
  out << v;
  return out.c_str();
}
template <typename T>
std::string default_text(const std::vector<T>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + default_text(v[i]);
  return out + "]";
}

}  // namespace

#define KD_GETTER(Type, name, as)                                                             \
  Type Node::name(std::string_view key, std::optional<Type> def) const {                      \
    if (auto n = find(key)) {                                                                 \
      if (!n->is_null()) return n->as();                                                      \
    }                                                                                         \
    if (def) {                                                                                \
      impl_->asked->defaults.emplace(detail::join_key(impl_->path, key), default_text(*def)); \
      return *def;                                                                            \
    }                                                                                         \
    return child(key).as();                                                                   \
  }
KD_GETTER(double, get_double, as_double)
KD_GETTER(int64_t, get_int, as_int)
KD_GETTER(bool, get_bool, as_bool)
KD_GETTER(std::string, get_string, as_string)
#undef KD_GETTER

namespace {

template <typename T>
std::string range_text(T min, T max) {
  const auto text = [](T v) {
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isinf(v)) return std::string(v > 0 ? "inf" : "-inf");
      std::ostringstream s;
      s << v;
      return s.str();
    } else {
      return std::to_string(v);
    }
  };
  if (max == std::numeric_limits<T>::max() || (std::is_floating_point_v<T> && std::isinf(max)))
    return ">= " + text(min);
  return "in [" + text(min) + ", " + text(max) + "]";
}

}  // namespace

int64_t Node::get_int_in(std::string_view key, std::optional<int64_t> def, int64_t min, int64_t max) const {
  const int64_t v = get_int(key, def);
  if (v < min || v > max) {
    const auto n = find(key);
    throw ConfigError((n ? n->where() : where()) + ": \"" + detail::join_key(impl_->path, key) + "\" must be " +
                      range_text(min, max) + ", got " + std::to_string(v));
  }
  return v;
}

double Node::get_double_in(std::string_view key, std::optional<double> def, double min, double max) const {
  const double v = get_double(key, def);
  if (!(v >= min && v <= max)) {
    const auto n = find(key);
    std::ostringstream got;
    got << v;
    throw ConfigError((n ? n->where() : where()) + ": \"" + detail::join_key(impl_->path, key) + "\" must be " +
                      range_text(min, max) + ", got " + got.str());
  }
  return v;
}

std::vector<int64_t> Node::get_int_list_in(std::string_view key, std::optional<std::vector<int64_t>> def, int64_t min,
                                           int64_t max) const {
  const std::vector<int64_t> values = get_int_list(key, def);
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] < min || values[i] > max) {
      const auto n = find(key);
      throw ConfigError((n ? n->where() : where()) + ": every element of \"" + detail::join_key(impl_->path, key) +
                        "\" must be " + range_text(min, max) + ", but element " + std::to_string(i) + " is " +
                        std::to_string(values[i]));
    }
  }
  return values;
}

#define KD_LIST_GETTER(Type, name, as)                                                             \
  std::vector<Type> Node::name(std::string_view key, std::optional<std::vector<Type>> def) const { \
    auto n = find(key);                                                                            \
    if (!n || n->is_null()) {                                                                      \
      if (def) {                                                                                   \
        impl_->asked->defaults.emplace(detail::join_key(impl_->path, key), default_text(*def));    \
        return *def;                                                                               \
      }                                                                                            \
      n = child(key);                                                                              \
    }                                                                                              \
    std::vector<Type> out;                                                                         \
    for (const Node& e : n->elements()) out.push_back(e.as());                                     \
    return out;                                                                                    \
  }
KD_LIST_GETTER(int64_t, get_int_list, as_int)
KD_LIST_GETTER(double, get_double_list, as_double)
KD_LIST_GETTER(std::string, get_string_list, as_string)
#undef KD_LIST_GETTER

std::string Node::where() const { return detail::where_of(*impl_, impl_->yaml); }

const std::string& Node::key_path() const { return impl_->path; }

void Node::check_unknown_keys() const {
  if (!impl_->yaml.IsMap()) return;
  const auto it = impl_->asked->keys.find(impl_->path);
  const std::set<std::string> none;
  const std::set<std::string>& asked = it == impl_->asked->keys.end() ? none : it->second;
  const std::vector<std::string> known(asked.begin(), asked.end());
  for (auto kv = impl_->yaml.begin(); kv != impl_->yaml.end(); ++kv) {
    const std::string key = kv->first.Scalar();
    if (asked.count(key)) continue;
    std::string message = detail::where_of(*impl_, kv->first) + ": unknown key \"" + key + "\"" +
                          (impl_->path.empty() ? "" : " in \"" + impl_->path + "\"");
    const auto close = nearest(key, known, 1);
    if (!close.empty()) message += ". Did you mean \"" + close.front() + "\"?";
    if (!known.empty()) message += " (valid keys: " + join_names(known) + ")";
    throw ConfigError(message);
  }
}

namespace detail {

Node make_document(YAML::Node yaml, std::string source,
                   std::shared_ptr<const std::vector<std::pair<YAML::Node, std::string>>> origins) {
  return Node(make(std::move(yaml), std::move(source), "", std::make_shared<Asked>(), std::move(origins)));
}

const YAML::Node& yaml_of(const Node& node) { return node.impl()->yaml; }

}  // namespace detail
}  // namespace kd::config
