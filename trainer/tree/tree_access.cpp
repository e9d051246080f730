#include "trainer/tree/tree_access.h"

#include <optional>
#include <stdexcept>

#include "trainer/common/suggest.h"
#include "trainer/tree/tree.h"

namespace kd::detail {

void throw_key_error(const Path& path, std::size_t failed_at, const Tree& parent, const std::string& where) {
  const std::string full = path.str();
  const std::string prefix = path.prefix(failed_at).str();
  const std::string parent_name = prefix.empty() ? "the " + where : "\"" + prefix + "\"";
  const PathSegment& segment = path[failed_at];
  std::string message = "no key \"" + full + "\" in " + where + "; ";

  if (parent.is_dict()) {
    if (parent.size() == 0) {
      message += parent_name + " is an empty dict";
    } else {
      message += parent_name + " has: " + join_names(parent.keys());
      const std::string asked = segment.kind == PathSegment::Kind::kIndex ? std::to_string(segment.index) : segment.key;
      const auto close = nearest(asked, parent.keys(), 1);
      if (!close.empty()) {
        std::vector<PathSegment> fixed = path.segments();
        fixed[failed_at] = PathSegment::make_key(close.front());
        message += ". Did you mean \"" + Path(std::move(fixed)).str() + "\"?";
      }
    }
  } else if (parent.is_list()) {
    message +=
        parent_name + " is a list of " + std::to_string(parent.size()) + " item" + (parent.size() == 1 ? "" : "s");
    if (segment.kind == PathSegment::Kind::kKey) {
      message += "; index it with a number, e.g. \"" + path.prefix(failed_at).index(0).str() + "\"";
    } else if (parent.size() > 0) {
      message += " (valid indices: 0 to " + std::to_string(parent.size() - 1) + ", or negative from the end)";
    }
  } else if (parent.is_none()) {
    message += parent_name + " is empty";
  } else {
    message += parent_name + " is a leaf (" + parent.describe() + "), it has no keys";
  }
  throw KeyError(message);
}

}  // namespace kd::detail

namespace kd::detail {
namespace {

std::optional<int64_t> parse_index(const std::string& key) {
  if (key.empty()) return std::nullopt;
  std::size_t i = key[0] == '-' ? 1 : 0;
  if (i == key.size()) return std::nullopt;
  for (std::size_t j = i; j < key.size(); ++j) {
    if (key[j] < '0' || key[j] > '9') return std::nullopt;
  }
  try {
    return std::stoll(key);
  } catch (const std::out_of_range&) {
    return std::nullopt;
  }
}

}  // namespace

const Tree* step_into(const Tree& node, const PathSegment& segment) {
  if (node.is_dict()) {
    if (segment.kind == PathSegment::Kind::kKey) return node.find(segment.key);
    if (segment.kind == PathSegment::Kind::kIndex) return node.find(std::to_string(segment.index));
    return nullptr;
  }
  if (node.is_list()) {
    std::optional<int64_t> index;
    if (segment.kind == PathSegment::Kind::kIndex) index = segment.index;
    if (segment.kind == PathSegment::Kind::kKey) index = parse_index(segment.key);
    if (!index) return nullptr;
    const auto size = static_cast<int64_t>(node.size());
    const int64_t i = *index < 0 ? *index + size : *index;
    if (i < 0 || i >= size) return nullptr;
    return &node.children()[static_cast<std::size_t>(i)];
  }
  return nullptr;
}

const Tree& get_from(const Tree& root, const Path& path, std::size_t start, const std::string& where) {
  const Tree* node = &root;
  for (std::size_t i = start; i < path.size(); ++i) {
    if (path[i].is_glob()) {
      throw NotSupportedError("the path \"" + path.str() + "\" has a glob; read it with glob()/select(), not get()");
    }
    const Tree* child = step_into(*node, path[i]);
    if (child == nullptr) throw_key_error(path, i, *node, where);
    node = child;
  }
  return *node;
}

}  // namespace kd::detail
