#include "trainer/tree/tree_json.h"

namespace kd {

using json = nlohmann::ordered_json;

json tree_to_json(const Tree& tree, const std::function<json(const torch::Tensor&)>& on_tensor) {
  switch (tree.kind()) {
    case Tree::Kind::kNone: return nullptr;
    case Tree::Kind::kTensor: return json{{"t", on_tensor(tree.tensor())}};
    case Tree::Kind::kInt: return json{{"i", tree.to_int()}};
    case Tree::Kind::kFloat: return json{{"f", tree.to_double()}};
    case Tree::Kind::kString: return json{{"s", tree.str()}};
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

Tree tree_from_json(const json& j, const std::function<torch::Tensor(const json&)>& on_tensor) {
  if (j.is_null()) return Tree();
  if (j.contains("t")) return Tree(on_tensor(j["t"]));
  if (j.contains("i")) return Tree(j["i"].get<int64_t>());
  if (j.contains("f")) return Tree(j["f"].get<double>());
  if (j.contains("s")) return Tree(j["s"].get<std::string>());
  if (j.contains("d")) {
    Tree out = Tree::dict();
    for (const auto& item : j["d"]) out.insert(item[0].get<std::string>(), tree_from_json(item[1], on_tensor));
    return out;
  }
  Tree out = Tree::list();
  for (const auto& item : j.at("l")) out.push_back(tree_from_json(item, on_tensor));
  return out;
}

}  // namespace kd
