#include "trainer/tree/tree.h"

#include <sstream>
#include <unordered_set>

#include "trainer/common/error.h"
#include "trainer/tree/tree_internal.h"

namespace kd {

struct Tree::Node {
  Kind kind = Kind::kNone;
  torch::Tensor tensor;
  int64_t int_value = 0;
  double float_value = 0;
  std::string string_value;
  std::vector<std::string> keys;  // dict only, parallel to children
  std::vector<Tree> children;     // dict or list
};

namespace {

const char* kind_name(Tree::Kind kind) {
  switch (kind) {
    case Tree::Kind::kNone: return "none";
    case Tree::Kind::kTensor: return "tensor";
    case Tree::Kind::kInt: return "int";
    case Tree::Kind::kFloat: return "float";
    case Tree::Kind::kString: return "string";
    case Tree::Kind::kDict: return "dict";
    case Tree::Kind::kList: return "list";
  }
  return "?";
}

const char* dtype_name(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return "float32";
    case torch::kDouble: return "float64";
    case torch::kHalf: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kLong: return "int64";
    case torch::kInt: return "int32";
    case torch::kShort: return "int16";
    case torch::kChar: return "int8";
    case torch::kByte: return "uint8";
    case torch::kBool: return "bool";
    default: return c10::toString(type);
  }
}

// The text of `prefix` extended by one segment, as Path::str() would write it.
std::string child_string(const std::string& prefix, const PathSegment& segment) {
  std::string s = segment.str();
  if (prefix.empty()) return s;
  return s[0] == '[' ? prefix + s : prefix + "." + s;
}

// Calls fn(segment, child) for each child of a container, with the segment naming it.
template <typename Fn>
void for_each_child(const Tree& node, Fn&& fn) {
  const auto& children = node.children();
  for (std::size_t i = 0; i < children.size(); ++i) {
    fn(node.is_dict() ? PathSegment::make_key(node.keys()[i])
                      : PathSegment::make_index(static_cast<int64_t>(i)),
       children[i]);
  }
}

const std::vector<std::string> kNoKeys;
const std::vector<Tree> kNoChildren;

}  // namespace

Tree::Tree(torch::Tensor tensor) : node_(std::make_shared<Node>()) {
  node_->kind = Kind::kTensor;
  node_->tensor = std::move(tensor);
}

Tree::Tree(int64_t value) : node_(std::make_shared<Node>()) {
  node_->kind = Kind::kInt;
  node_->int_value = value;
}

Tree::Tree(double value) : node_(std::make_shared<Node>()) {
  node_->kind = Kind::kFloat;
  node_->float_value = value;
}

Tree::Tree(std::string value) : node_(std::make_shared<Node>()) {
  node_->kind = Kind::kString;
  node_->string_value = std::move(value);
}

Tree Tree::dict(std::vector<Item> items) {
  auto node = std::make_shared<Node>();
  node->kind = Kind::kDict;
  Tree tree(std::move(node));
  for (auto& [key, value] : items) tree.insert(std::move(key), std::move(value));
  return tree;
}

Tree Tree::list(std::vector<Tree> items) {
  auto node = std::make_shared<Node>();
  node->kind = Kind::kList;
  node->children = std::move(items);
  return Tree(std::move(node));
}

Tree::Kind Tree::kind() const { return node_ ? node_->kind : Kind::kNone; }

bool Tree::is_leaf() const {
  const Kind k = kind();
  return k == Kind::kTensor || k == Kind::kInt || k == Kind::kFloat || k == Kind::kString;
}

bool Tree::empty() const {
  const Kind k = kind();
  return k == Kind::kNone || ((k == Kind::kDict || k == Kind::kList) && node_->children.empty());
}

const torch::Tensor& Tree::tensor() const {
  if (kind() != Kind::kTensor) {
    throw TypeError(std::string("expected a tensor, but the tree holds ") + describe());
  }
  return node_->tensor;
}

int64_t Tree::to_int() const {
  switch (kind()) {
    case Kind::kInt:
      return node_->int_value;
    case Kind::kTensor:
      if (node_->tensor.numel() == 1 && !node_->tensor.is_floating_point()) {
        return node_->tensor.item<int64_t>();
      }
      break;
    default:
      break;
  }
  throw TypeError("expected an integer, but the tree holds " + describe());
}

double Tree::to_double() const {
  switch (kind()) {
    case Kind::kInt:
      return static_cast<double>(node_->int_value);
    case Kind::kFloat:
      return node_->float_value;
    case Kind::kTensor:
      if (node_->tensor.numel() == 1) return node_->tensor.item<double>();
      break;
    default:
      break;
  }
  throw TypeError("expected a number, but the tree holds " + describe());
}

const std::string& Tree::str() const {
  if (kind() != Kind::kString) throw TypeError("expected a string, but the tree holds " + describe());
  return node_->string_value;
}

std::size_t Tree::size() const { return node_ ? node_->children.size() : 0; }

const std::vector<std::string>& Tree::keys() const { return is_dict() ? node_->keys : kNoKeys; }

const std::vector<Tree>& Tree::children() const {
  return (is_dict() || is_list()) ? node_->children : kNoChildren;
}

std::vector<Tree::Item> Tree::items() const {
  std::vector<Item> out;
  if (!is_dict()) return out;
  out.reserve(size());
  for (std::size_t i = 0; i < size(); ++i) out.emplace_back(node_->keys[i], node_->children[i]);
  return out;
}

const Tree* Tree::find(std::string_view key) const {
  if (!is_dict()) return nullptr;
  // Linear: a dict level holds a handful of keys (fields, modules, losses); a flat scan of a
  // few strings beats hashing and keeps copies cheap.
  for (std::size_t i = 0; i < node_->keys.size(); ++i) {
    if (node_->keys[i] == key) return &node_->children[i];
  }
  return nullptr;
}

const Tree& Tree::at(std::string_view key) const {
  return detail::get_from(*this, Path({PathSegment::make_key(std::string(key))}), 0, "tree");
}

const Tree& Tree::at(std::size_t index) const {
  return detail::get_from(*this, Path({PathSegment::make_index(static_cast<int64_t>(index))}), 0,
                          "tree");
}

Tree::Node& Tree::mutable_node() {
  if (!node_) {
    node_ = std::make_shared<Node>();
  } else if (node_.use_count() > 1) {
    node_ = std::make_shared<Node>(*node_);
  }
  return *node_;
}

Tree& Tree::insert(std::string key, Tree value) {
  const Kind k = kind();
  if (k != Kind::kNone && k != Kind::kDict) {
    throw TypeError("cannot insert key \"" + key + "\" into " + describe() + "; only into a dict");
  }
  Node& node = mutable_node();
  node.kind = Kind::kDict;
  for (std::size_t i = 0; i < node.keys.size(); ++i) {
    if (node.keys[i] == key) {
      node.children[i] = std::move(value);
      return *this;
    }
  }
  node.keys.push_back(std::move(key));
  node.children.push_back(std::move(value));
  return *this;
}

Tree& Tree::push_back(Tree value) {
  const Kind k = kind();
  if (k != Kind::kNone && k != Kind::kList) {
    throw TypeError("cannot append to " + describe() + "; only to a list");
  }
  Node& node = mutable_node();
  node.kind = Kind::kList;
  node.children.push_back(std::move(value));
  return *this;
}

bool Tree::erase(std::string_view key) {
  if (!contains(key)) return false;
  Node& node = mutable_node();
  for (std::size_t i = 0; i < node.keys.size(); ++i) {
    if (node.keys[i] == key) {
      node.keys.erase(node.keys.begin() + static_cast<std::ptrdiff_t>(i));
      node.children.erase(node.children.begin() + static_cast<std::ptrdiff_t>(i));
      return true;
    }
  }
  return false;
}

Tree Tree::get(const Path& path) const { return detail::get_from(*this, path, 0, "tree"); }

std::optional<Tree> Tree::try_get(const Path& path) const {
  const Tree* node = this;
  for (const auto& segment : path.segments()) {
    node = detail::step_into(*node, segment);
    if (node == nullptr) return std::nullopt;
  }
  return *node;
}

namespace {

Tree set_in(const Tree& node, const Path& path, std::size_t i, Tree value) {
  if (i == path.size()) return value;
  const PathSegment& segment = path[i];
  if (segment.is_glob()) {
    throw NotSupportedError("cannot set \"" + path.str() + "\": set() takes a path without globs");
  }
  if (node.is_list()) {
    const Tree* child = detail::step_into(node, segment);
    if (child == nullptr) detail::throw_key_error(path, i, node, "tree");
    const auto index = static_cast<std::size_t>(child - node.children().data());
    std::vector<Tree> items = node.children();
    items[index] = set_in(*child, path, i + 1, std::move(value));
    return Tree::list(std::move(items));
  }
  if (!node.is_dict() && !node.is_none()) {
    throw TypeError("cannot set \"" + path.str() + "\": \"" + path.prefix(i).str() + "\" is " +
                    node.describe() + ", not a dict");
  }
  const std::string key =
      segment.kind == PathSegment::Kind::kIndex ? std::to_string(segment.index) : segment.key;
  const Tree* child = node.find(key);
  Tree updated = node.is_none() ? Tree::dict() : node;
  updated.insert(key, set_in(child ? *child : Tree(), path, i + 1, std::move(value)));
  return updated;
}

// The text of every node matching `pattern`, collected by walking pattern and tree together.
void collect_matches(const Tree& node, const Path& pattern, std::size_t i, const std::string& here,
                     std::size_t first_glob, const std::string& where,
                     std::unordered_set<std::string>& out) {
  if (i == pattern.size()) {
    out.insert(here);
    return;
  }
  const PathSegment& segment = pattern[i];
  switch (segment.kind) {
    case PathSegment::Kind::kKey:
    case PathSegment::Kind::kIndex: {
      const Tree* child = detail::step_into(node, segment);
      if (child == nullptr) {
        if (i < first_glob) detail::throw_key_error(pattern, i, node, where);
        return;
      }
      // Name the child as the container does, so "layers.0" and "layers[0]" agree.
      PathSegment concrete = segment;
      if (node.is_list()) {
        concrete = PathSegment::make_index(static_cast<int64_t>(child - node.children().data()));
      } else if (segment.kind == PathSegment::Kind::kIndex) {
        concrete = PathSegment::make_key(std::to_string(segment.index));
      }
      collect_matches(*child, pattern, i + 1, child_string(here, concrete), first_glob, where, out);
      return;
    }
    case PathSegment::Kind::kStar:
      for_each_child(node, [&](const PathSegment& s, const Tree& child) {
        collect_matches(child, pattern, i + 1, child_string(here, s), first_glob, where, out);
      });
      return;
    case PathSegment::Kind::kDoubleStar:
      collect_matches(node, pattern, i + 1, here, first_glob, where, out);
      for_each_child(node, [&](const PathSegment& s, const Tree& child) {
        collect_matches(child, pattern, i, child_string(here, s), first_glob, where, out);
      });
      return;
  }
}

std::unordered_set<std::string> matches(const Tree& root, const Path& pattern,
                                        const std::string& where) {
  std::size_t first_glob = 0;
  while (first_glob < pattern.size() && !pattern[first_glob].is_glob()) ++first_glob;
  std::unordered_set<std::string> out;
  collect_matches(root, pattern, 0, "", first_glob, where, out);
  return out;
}

// Pre-order walk emitting matched nodes; a match's descendants are not visited.
void emit_in_order(const Tree& node, const Path& here, const std::string& here_str,
                   const std::unordered_set<std::string>& matched,
                   std::vector<std::pair<Path, Tree>>& out) {
  if (matched.count(here_str)) {
    out.emplace_back(here, node);
    return;
  }
  for_each_child(node, [&](const PathSegment& s, const Tree& child) {
    emit_in_order(child, Path(here).join(Path({s})), child_string(here_str, s), matched, out);
  });
}

std::optional<Tree> prune(const Tree& node, const std::string& here,
                          const std::unordered_set<std::string>& matched) {
  if (matched.count(here)) return node;
  if (!node.is_dict() && !node.is_list()) return std::nullopt;
  Tree out = node.is_dict() ? Tree::dict() : Tree::list();
  for_each_child(node, [&](const PathSegment& s, const Tree& child) {
    if (auto kept = prune(child, child_string(here, s), matched)) {
      if (node.is_dict()) {
        out.insert(s.key, std::move(*kept));
      } else {
        out.push_back(std::move(*kept));
      }
    }
  });
  if (out.size() == 0) return std::nullopt;
  return out;
}

void flatten_into(const Tree& node, const std::string& here,
                  std::vector<std::pair<std::string, Tree>>& out) {
  if (node.is_leaf()) {
    out.emplace_back(here, node);
    return;
  }
  for_each_child(node, [&](const PathSegment& s, const Tree& child) {
    flatten_into(child, child_string(here, s), out);
  });
}

void flatten_paths_into(const Tree& node, const Path& here,
                        std::vector<std::pair<Path, Tree>>& out) {
  if (node.is_leaf()) {
    out.emplace_back(here, node);
    return;
  }
  for_each_child(node, [&](const PathSegment& s, const Tree& child) {
    flatten_paths_into(child, here.join(Path({s})), out);
  });
}

Tree map_impl(const Tree& node, const Path& here,
              const std::function<torch::Tensor(const Path&, const torch::Tensor&)>& fn) {
  if (node.is_tensor()) return fn(here, node.tensor());
  if (node.is_dict()) {
    Tree out = Tree::dict();
    for_each_child(node, [&](const PathSegment& s, const Tree& child) {
      out.insert(s.key, map_impl(child, here.join(Path({s})), fn));
    });
    return out;
  }
  if (node.is_list()) {
    Tree out = Tree::list();
    for_each_child(node, [&](const PathSegment& s, const Tree& child) {
      out.push_back(map_impl(child, here.join(Path({s})), fn));
    });
    return out;
  }
  return node;
}

void print_into(const Tree& node, int indent, std::ostringstream& out) {
  for_each_child(node, [&](const PathSegment& s, const Tree& child) {
    out << std::string(static_cast<std::size_t>(indent) * 2, ' ') << s.str() << ":";
    if (child.is_dict() || child.is_list()) {
      if (child.size() == 0) {
        out << (child.is_dict() ? " {}" : " []") << "\n";
      } else {
        out << "\n";
        print_into(child, indent + 1, out);
      }
    } else {
      out << " " << child.describe() << "\n";
    }
  });
}

}  // namespace

std::vector<std::pair<Path, Tree>> detail::glob_in(const Tree& root, const Path& pattern,
                                                   const std::string& where) {
  const auto matched = matches(root, pattern, where);
  std::vector<std::pair<Path, Tree>> out;
  if (!matched.empty()) emit_in_order(root, Path(), "", matched, out);
  return out;
}

Tree Tree::set(const Path& path, Tree value) const { return set_in(*this, path, 0, std::move(value)); }

std::vector<std::pair<Path, Tree>> Tree::glob(const Path& pattern) const {
  return detail::glob_in(*this, pattern, "tree");
}

Tree Tree::select(const Path& pattern) const {
  const auto matched = matches(*this, pattern, "tree");
  if (matched.empty()) return Tree();
  return prune(*this, "", matched).value_or(Tree());
}

std::vector<std::pair<std::string, Tree>> Tree::flatten(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tree>> out;
  flatten_into(*this, prefix, out);
  return out;
}

std::vector<std::pair<Path, Tree>> Tree::flatten_paths(const Path& prefix) const {
  std::vector<std::pair<Path, Tree>> out;
  flatten_paths_into(*this, prefix, out);
  return out;
}

std::size_t Tree::num_tensors() const {
  if (is_tensor()) return 1;
  std::size_t n = 0;
  for (const auto& child : children()) n += child.num_tensors();
  return n;
}

int64_t Tree::num_elements() const {
  if (is_tensor()) return node_->tensor.numel();
  int64_t n = 0;
  for (const auto& child : children()) n += child.num_elements();
  return n;
}

Tree Tree::map(const std::function<torch::Tensor(const torch::Tensor&)>& fn) const {
  return map_impl(*this, Path(), [&](const Path&, const torch::Tensor& t) { return fn(t); });
}

Tree Tree::map_with_path(
    const std::function<torch::Tensor(const Path&, const torch::Tensor&)>& fn) const {
  return map_impl(*this, Path(), fn);
}

std::string Tree::describe() const {
  switch (kind()) {
    case Kind::kNone: return "none";
    case Kind::kTensor: return describe_tensor(node_->tensor);
    case Kind::kInt: return "int " + std::to_string(node_->int_value);
    case Kind::kFloat: {
      std::ostringstream s;
      s << "float " << node_->float_value;
      return s.str();
    }
    case Kind::kString: return "string \"" + node_->string_value + "\"";
    case Kind::kDict:
    case Kind::kList: return std::string(kind_name(kind())) + "(" + std::to_string(size()) + ")";
  }
  return "?";
}

std::string Tree::to_string() const {
  if (!is_dict() && !is_list()) return describe() + "\n";
  std::ostringstream out;
  print_into(*this, 0, out);
  return out.str();
}

std::string describe_tensor(const torch::Tensor& tensor) {
  if (!tensor.defined()) return "undefined tensor";
  std::string out = dtype_name(tensor.scalar_type());
  out += "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    if (d) out += ", ";
    out += std::to_string(tensor.size(d));
  }
  out += "]";
  if (!tensor.device().is_cpu()) out += " on " + tensor.device().str();
  return out;
}

}  // namespace kd
