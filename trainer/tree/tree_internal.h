// Tree's own representation and the walks its parts share (tree.cpp, tree_glob.cpp,
// tree_print.cpp). Internal to trainer/tree/.
#pragma once

#include <string>
#include <vector>

#include "trainer/tree/tree.h"

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

namespace detail {

// "none", "tensor", "dict", ...
const char* kind_name(Tree::Kind kind);

// The text of `prefix` extended by one segment, as Path::str() would write it.
inline std::string child_string(const std::string& prefix, const PathSegment& segment) {
  std::string s = segment.str();
  if (prefix.empty()) return s;
  return s[0] == '[' ? prefix + s : prefix + "." + s;
}

// Calls fn(segment, child) for each child of a container, with the segment naming it.
template <typename Fn>
void for_each_child(const Tree& node, Fn&& fn) {
  const auto& children = node.children();
  for (std::size_t i = 0; i < children.size(); ++i) {
    fn(node.is_dict() ? PathSegment::make_key(node.keys()[i]) : PathSegment::make_index(static_cast<int64_t>(i)),
       children[i]);
  }
}

}  // namespace detail
}  // namespace kd
