#include <map>
#include <string>
#include <utility>
#include <vector>

#include "trainer/config/merge_internal.h"
#include "trainer/config/references_internal.h"

namespace kd::config::detail {
namespace {

constexpr const char* kReplaceTag = "!replace";

// The null values under `map` removed: in a value that is not merged into another, a null has
// nothing to remove.
void drop_nulls(YAML::Node map) {
  if (!map.IsMap()) return;
  std::vector<std::string> nulls;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (it->second.IsNull()) {
      nulls.push_back(it->first.Scalar());
    } else {
      drop_nulls(it->second);
    }
  }
  for (const auto& key : nulls) map.remove(key);
}

// The values of `node` that YAML aliases share with their anchors, replaced by copies: kd reads
// an alias as a copy of the anchored value made when the file is read, so that an override
// changes only the key it names. Each copy (a map's value or a list's element) is recorded in
// `copies`.
class AliasCopier {
 public:
  AliasCopier(std::string file, std::vector<AliasCopy>& copies) : file_(std::move(file)), copies_(copies) {}

  void walk(YAML::Node node, const std::string& path) {
    if (node.IsMap()) {
      std::vector<std::pair<YAML::Node, YAML::Node>> entries;
      bool aliased = false;
      for (auto it = node.begin(); it != node.end(); ++it) {
        const std::string key = join_key(path, it->first.Scalar());
        YAML::Node value = it->second;
        if (const std::string* anchor = first_seen(value, key)) {
          copies_.push_back({*anchor, key, file_ + ":" + std::to_string(it->first.Mark().line + 1)});
          value.reset(YAML::Clone(value));  // rebinds the handle (operator= would write into the shared node)
          aliased = true;
        } else {
          walk(value, key);
        }
        entries.emplace_back(it->first, value);
      }
      if (aliased) {  // rebuilt in order, each copy in place of the shared value
        for (const auto& entry : entries) node.remove(entry.first.Scalar());
        for (const auto& [key, value] : entries) node.force_insert(key, value);
      }
    } else if (node.IsSequence()) {
      YAML::Node rebuilt(YAML::NodeType::Sequence);
      bool aliased = false;
      for (std::size_t i = 0; i < node.size(); ++i) {
        const std::string key = join_index(path, i);
        YAML::Node element;
        element.reset(node[i]);
        if (const std::string* anchor = first_seen(element, key)) {
          copies_.push_back({*anchor, key, file_ + ":" + std::to_string(node.Mark().line + 1)});
          element.reset(YAML::Clone(element));
          aliased = true;
        } else {
          walk(element, key);
        }
        rebuilt.push_back(element);
      }
      if (aliased) node = rebuilt;  // the list's own node takes the rebuilt elements
    }
  }

 private:
  // The key where `value` was first met when it is met again (an alias), else nullptr (and
  // `value` is remembered at `key`). Nodes of a file have distinct positions; an alias is its
  // anchor's node, at its anchor's position.
  const std::string* first_seen(const YAML::Node& value, const std::string& key) {
    const YAML::Mark mark = value.Mark();
    if (mark.is_null()) return nullptr;
    auto [at, fresh] = seen_.emplace(mark.pos, std::pair{value, key});
    return !fresh && at->second.first.is(value) ? &at->second.second : nullptr;
  }

  std::string file_;
  std::vector<AliasCopy>& copies_;
  std::map<int, std::pair<YAML::Node, std::string>> seen_;
};

}  // namespace

// Whether `over` merges into `base` key by key (see experiment.h): both maps, `over` not empty
// and not tagged !replace, and `over` names no `type` other than the base's (a component of
// another type is a different component, whose options are its own).
bool merges(const YAML::Node& base, const YAML::Node& over) {
  if (!base.IsMap() || !over.IsMap() || over.size() == 0 || over.Tag() == kReplaceTag) return false;
  const YAML::Node to = over["type"];
  if (!to) return true;
  const YAML::Node tb = base["type"];
  return tb && tb.IsScalar() && to.IsScalar() && tb.Scalar() == to.Scalar();
}

// Puts `value` at `key` of the map `map` by kd's one rule, the same for a file over its base and
// for an override: a map merges into the map there (merges()); null removes the key (its
// default again); anything else replaces what was there. A new key keeps its own file position.
void put(YAML::Node map, const YAML::Node& key_node, const YAML::Node& value) {
  const std::string key = key_node.Scalar();
  YAML::Node existing = map[key];
  if (value.IsNull()) {
    map.remove(key);  // also the empty entry operator[] added when there was none
  } else if (existing.IsDefined() && !existing.IsNull() && merges(existing, value)) {
    merge_into(existing, value);
  } else {
    if (value.Tag() == kReplaceTag) {
      YAML::Node untagged = value;
      untagged.SetTag("?");
    }
    drop_nulls(value);  // a null in a new map removes nothing: it is left out
    if (existing.IsDefined()) {
      map[key] = value;  // in the key's place
    } else {
      map.remove(key);                    // operator[] above added an empty entry
      map.force_insert(key_node, value);  // keeps the key's own file position
    }
  }
}

void merge_into(YAML::Node base, const YAML::Node& over) {
  for (auto it = over.begin(); it != over.end(); ++it) put(base, it->first, it->second);
}

void copy_aliases(YAML::Node doc, const std::string& file, std::vector<AliasCopy>& copies) {
  AliasCopier(file, copies).walk(doc, "");
}

}  // namespace kd::config::detail
