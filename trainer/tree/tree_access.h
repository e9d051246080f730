// Path access for trees held in fields of one's own (train::Context holds one per field):
// stepping along a path and building the messages of kd::KeyError (what was asked for, the
// deepest part of the path that exists, what that part holds, and the nearest existing keys),
// naming the root as the holder does ("context"). Tree's own members use the same functions.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/tree/path.h"

namespace kd {

class Tree;

namespace detail {

// The child of `node` named by a non-glob segment, or nullptr. A key of digits indexes a list
// and an index names the dict key of its digits, so "layers.0" and "layers[0]" both work.
const Tree* step_into(const Tree& node, const PathSegment& segment);

// The node at path[start:] below `root`, which itself sits at path[:start]. Throws the
// KeyError for the full `path`; `where` names the root of `path` ("context", "tree").
const Tree& get_from(const Tree& root, const Path& path, std::size_t start, const std::string& where);

// Tree::glob, naming the root `where` in errors.
std::vector<std::pair<Path, Tree>> glob_in(const Tree& root, const Path& pattern, const std::string& where);

// Throws the KeyError for `path` failing at segment `failed_at`: `parent` is the node reached
// by the first `failed_at` segments.
[[noreturn]] void throw_key_error(const Path& path, std::size_t failed_at, const Tree& parent,
                                  const std::string& where);

}  // namespace detail
}  // namespace kd
