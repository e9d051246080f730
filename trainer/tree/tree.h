// kd::Tree: the value every Context field holds. A tree is a leaf (a torch::Tensor, an integer,
// a float or a string), an ordered string-keyed dict (insertion order is kept), a list, or none.
//
//   kd::Tree batch = kd::Tree::dict({{"image", images}, {"label", labels}});
//   torch::Tensor x = batch.get("image").tensor();
//   kd::Tree with_mask = batch.set("mask", mask);          // batch itself is unchanged
//   for (const auto& [path, leaf] : params.flatten()) ...  // "encoder.0.weight" -> tensor
//   kd::Tree biases = params.select("**.bias");            // the sub-tree of every bias
//
// Copies are cheap: a Tree is a shared pointer to an immutable node, so copying shares the
// tensors and every sub-tree. The mutating members (`insert`, `push_back`, `erase`) copy a
// node first when another Tree still shares it (copy-on-write), so no copy ever sees a change
// made through another. As with standard containers, one Tree object must not be mutated
// from two threads at once; distinct copies may be used freely.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "trainer/common/tensor_text.h"  // describe_tensor, for every tree user
#include "trainer/common/torch_fwd.h"
#include "trainer/tree/path.h"

namespace kd {

class Tree {
 public:
  enum class Kind : uint8_t { kNone, kTensor, kInt, kFloat, kString, kDict, kList };

  using Item = std::pair<std::string, Tree>;

  Tree() = default;            // none
  Tree(torch::Tensor tensor);  // NOLINT: implicit, trees are built from tensors everywhere
  Tree(int64_t value);
  Tree(int value) : Tree(static_cast<int64_t>(value)) {}
  Tree(double value);
  Tree(std::string value);
  Tree(const char* value) : Tree(std::string(value)) {}

  static Tree dict(std::vector<Item> items = {});
  static Tree dict(std::initializer_list<Item> items) { return dict(std::vector<Item>(items)); }
  static Tree list(std::vector<Tree> items = {});

  Kind kind() const;
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_tensor() const { return kind() == Kind::kTensor; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_leaf() const;  // tensor, int, float or string
  // True for none, and for a dict or list without children.
  bool empty() const;

  // Leaf access; each throws kd::TypeError naming the kind actually held.
  const torch::Tensor& tensor() const;
  int64_t to_int() const;    // an int, or a one-element integer tensor
  double to_double() const;  // an int, a float, or a one-element tensor
  const std::string& str() const;

  // Containers (dict or list). For a dict, `keys()[i]` names `children()[i]`.
  std::size_t size() const;
  const std::vector<std::string>& keys() const;
  const std::vector<Tree>& children() const;
  std::vector<Item> items() const;
  const Tree* find(std::string_view key) const;  // nullptr when absent or not a dict
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  const Tree& at(std::string_view key) const;  // throws kd::KeyError
  const Tree& at(std::size_t index) const;     // throws kd::KeyError

  // In-place building (copy-on-write). `insert` replaces an existing key in place or appends;
  // on a none tree it first turns it into an empty dict, `push_back` into an empty list.
  Tree& insert(std::string key, Tree value);
  Tree& push_back(Tree value);
  bool erase(std::string_view key);

  // Path access. `get` throws kd::KeyError naming the nearest existing keys; paths with
  // globs are for `glob`/`select`.
  Tree get(const Path& path) const;
  Tree get(std::string_view path) const { return get(Path::parse(path)); }
  std::optional<Tree> try_get(const Path& path) const;
  bool contains(const Path& path) const { return try_get(path).has_value(); }
  // A new tree with `value` at `path`, creating missing dicts on the way; this tree is
  // unchanged and the new one shares everything off the path. An index must exist.
  Tree set(const Path& path, Tree value) const;
  Tree set(std::string_view path, Tree value) const { return set(Path::parse(path), std::move(value)); }

  // Every node matching a path with `*` (one level) and `**` (zero or more levels), in tree
  // order, as (concrete path, node). A node inside another match is not listed again. The
  // part before the first glob must exist (else kd::KeyError); a glob may match nothing.
  std::vector<std::pair<Path, Tree>> glob(const Path& pattern) const;
  // The matches of `glob` as one tree of the same shape (lists keep the matched items in order).
  Tree select(const Path& pattern) const;
  Tree select(std::string_view pattern) const { return select(Path::parse(pattern)); }

  // Every leaf as ("a.b[0].c", leaf) in tree order. `prefix` is prepended ("prefix.a.b").
  std::vector<std::pair<std::string, Tree>> flatten(const std::string& prefix = "") const;
  std::vector<std::pair<Path, Tree>> flatten_paths(const Path& prefix = {}) const;
  // Number of tensor leaves; and of their elements.
  std::size_t num_tensors() const;
  int64_t num_elements() const;

  // A tree of the same shape with `fn` applied to every tensor leaf (other leaves are kept).
  Tree map(const std::function<torch::Tensor(const torch::Tensor&)>& fn) const;
  Tree map_with_path(const std::function<torch::Tensor(const Path&, const torch::Tensor&)>& fn) const;

  // A one-line description of a node: "float32[128, 10]", "int 3", "dict(2)", "list(4)".
  std::string describe() const;
  // An indented multi-line listing of the whole tree, one leaf per line.
  std::string to_string() const;

  // True when both share the same node (not a value comparison).
  bool is_same(const Tree& other) const { return node_ == other.node_; }

 private:
  struct Node;
  explicit Tree(std::shared_ptr<Node> node) : node_(std::move(node)) {}
  Node& mutable_node();

  std::shared_ptr<Node> node_;  // null means none
};

// The named parameters / buffers of a module as a nested tree ("encoder.0.weight" ->
// {encoder: {0: {weight: ...}}}), sharing the module's tensors.
Tree params_tree(const torch::nn::Module& module);
Tree buffers_tree(const torch::nn::Module& module);

}  // namespace kd
