#include "trainer/tree/tree.h"

#include "trainer/common/error.h"
#include "trainer/tree/tree_access.h"
#include "trainer/tree/tree_internal.h"

namespace kd {
namespace {

using detail::for_each_child;

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

const std::vector<Tree>& Tree::children() const { return (is_dict() || is_list()) ? node_->children : kNoChildren; }

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
  return detail::get_from(*this, Path({PathSegment::make_index(static_cast<int64_t>(index))}), 0, "tree");
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
    throw TypeError("cannot set \"" + path.str() + "\": \"" + path.prefix(i).str() + "\" is " + node.describe() +
                    ", not a dict");
  }
  const std::string key = segment.kind == PathSegment::Kind::kIndex ? std::to_string(segment.index) : segment.key;
  const Tree* child = node.find(key);
  Tree updated = node.is_none() ? Tree::dict() : node;
  updated.insert(key, set_in(child ? *child : Tree(), path, i + 1, std::move(value)));
  return updated;
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

}  // namespace

Tree Tree::set(const Path& path, Tree value) const { return set_in(*this, path, 0, std::move(value)); }

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

Tree Tree::map_with_path(const std::function<torch::Tensor(const Path&, const torch::Tensor&)>& fn) const {
  return map_impl(*this, Path(), fn);
}

}  // namespace kd
