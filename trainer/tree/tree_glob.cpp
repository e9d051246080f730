// Tree's path operations over many nodes: glob, select, flatten.
#include <unordered_set>

#include "trainer/tree/tree.h"
#include "trainer/tree/tree_access.h"
#include "trainer/tree/tree_internal.h"

namespace kd {
namespace {

using detail::child_string;
using detail::for_each_child;

// The text of every node matching `pattern`, collected by walking pattern and tree together.
void collect_matches(const Tree& node, const Path& pattern, std::size_t i, const std::string& here,
                     std::size_t first_glob, const std::string& where, std::unordered_set<std::string>& out) {
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

std::unordered_set<std::string> matches(const Tree& root, const Path& pattern, const std::string& where) {
  std::size_t first_glob = 0;
  while (first_glob < pattern.size() && !pattern[first_glob].is_glob()) ++first_glob;
  std::unordered_set<std::string> out;
  collect_matches(root, pattern, 0, "", first_glob, where, out);
  return out;
}

// Pre-order walk emitting matched nodes; a match's descendants are not visited.
void emit_in_order(const Tree& node, const Path& here, const std::string& here_str,
                   const std::unordered_set<std::string>& matched, std::vector<std::pair<Path, Tree>>& out) {
  if (matched.count(here_str)) {
    out.emplace_back(here, node);
    return;
  }
  for_each_child(node, [&](const PathSegment& s, const Tree& child) {
    emit_in_order(child, Path(here).join(Path({s})), child_string(here_str, s), matched, out);
  });
}

std::optional<Tree> prune(const Tree& node, const std::string& here, const std::unordered_set<std::string>& matched) {
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

void flatten_into(const Tree& node, const std::string& here, std::vector<std::pair<std::string, Tree>>& out) {
  if (node.is_leaf()) {
    out.emplace_back(here, node);
    return;
  }
  for_each_child(node,
                 [&](const PathSegment& s, const Tree& child) { flatten_into(child, child_string(here, s), out); });
}

void flatten_paths_into(const Tree& node, const Path& here, std::vector<std::pair<Path, Tree>>& out) {
  if (node.is_leaf()) {
    out.emplace_back(here, node);
    return;
  }
  for_each_child(
      node, [&](const PathSegment& s, const Tree& child) { flatten_paths_into(child, here.join(Path({s})), out); });
}

}  // namespace

std::vector<std::pair<Path, Tree>> detail::glob_in(const Tree& root, const Path& pattern, const std::string& where) {
  const auto matched = matches(root, pattern, where);
  std::vector<std::pair<Path, Tree>> out;
  if (!matched.empty()) emit_in_order(root, Path(), "", matched, out);
  return out;
}

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

}  // namespace kd
