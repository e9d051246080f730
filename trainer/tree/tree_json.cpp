#include "trainer/tree/tree_json.h"

#include <string>

#include "trainer/common/error.h"

namespace kd {

using json = nlohmann::ordered_json;

json tree_to_json(const Tree& tree, const std::function<json(const torch::Tensor&)>& on_tensor) {
  switch (tree.kind()) {
    case Tree::Kind::kNone:
      return nullptr;
    case Tree::Kind::kTensor:
      return json{{"t", on_tensor(tree.tensor())}};
    case Tree::Kind::kInt:
      return json{{"i", tree.to_int()}};
    case Tree::Kind::kFloat:
      return json{{"f", tree.to_double()}};
    case Tree::Kind::kString:
      return json{{"s", tree.str()}};
    case Tree::Kind::kDict: {
      json items = json::array();
      for (const auto& [k, v] : tree.items()) items.push_back(json::array({k, tree_to_json(v, on_tensor)}));
      return json{{"d", items}};
    }
    case Tree::Kind::kList: {
      json items = json::array();
      for (const auto& v : tree.children()) items.push_back(tree_to_json(v, on_tensor));
      return json{{"l", items}};
    }
  }
  return nullptr;
}

namespace {

// Deeper trees than this are not kd's (its deepest are a few levels): a skeleton nested deeper
// is damaged or crafted, and reading it recursively would exhaust the stack.
constexpr int kMaxDepth = 64;

Tree from_json(const json& j, const std::function<torch::Tensor(const json&)>& on_tensor, int depth) {
  if (depth > kMaxDepth)
    throw CorruptionError("a tree skeleton nested deeper than " + std::to_string(kMaxDepth) + " levels");
  if (j.is_null()) return Tree();
  if (!j.is_object() || j.size() != 1)
    throw CorruptionError("a tree skeleton node is not {\"t\"|\"i\"|\"f\"|\"s\"|\"d\"|\"l\": ...}");
  if (j.contains("t")) return Tree(on_tensor(j["t"]));
  if (j.contains("i")) return Tree(json_int(j["i"], "an int leaf"));
  if (j.contains("f")) return Tree(j["f"].get<double>());
  if (j.contains("s")) return Tree(j["s"].get<std::string>());
  if (j.contains("d")) {
    Tree out = Tree::dict();
    for (const auto& item : j["d"]) {
      if (!item.is_array() || item.size() != 2) throw CorruptionError("a tree skeleton dict entry is not [key, node]");
      out.insert(item[0].get<std::string>(), from_json(item[1], on_tensor, depth + 1));
    }
    return out;
  }
  Tree out = Tree::list();
  for (const auto& item : j.at("l")) out.push_back(from_json(item, on_tensor, depth + 1));
  return out;
}

}  // namespace

Tree tree_from_json(const json& j, const std::function<torch::Tensor(const json&)>& on_tensor) {
  return from_json(j, on_tensor, 0);
}

}  // namespace kd
