#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/tree/tree.h"
#include "trainer/tree/tree_json.h"

using kd::Path;
using kd::Tree;

namespace {

// params-like tree: {encoder: {0: {weight, bias}, 1: {weight, bias}}, head: {weight}}
Tree make_params() {
  Tree t = Tree::dict();
  t = t.set("encoder.0.weight", torch::ones({4, 3}));
  t = t.set("encoder.0.bias", torch::zeros({4}));
  t = t.set("encoder.1.weight", torch::ones({2, 4}));
  t = t.set("encoder.1.bias", torch::zeros({2}));
  t = t.set("head.weight", torch::full({1, 2}, 2.0));
  return t;
}

std::vector<std::string> paths_of(const std::vector<std::pair<Path, Tree>>& matches) {
  std::vector<std::string> out;
  for (const auto& [p, t] : matches) out.push_back(p.str());
  return out;
}

}  // namespace

TEST_CASE("leaves hold tensors, integers, floats and strings") {
  CHECK(Tree(torch::ones({2})).is_tensor());
  CHECK(Tree(int64_t{3}).to_int() == 3);
  CHECK(Tree(2.5).to_double() == 2.5);
  CHECK(Tree("hi").str() == "hi");
  CHECK(Tree(torch::tensor(7)).to_int() == 7);
  CHECK(Tree(torch::tensor(0.5)).to_double() == 0.5);
  CHECK(Tree().is_none());
  CHECK(Tree().empty());
  CHECK(Tree::dict().empty());
  CHECK_FALSE(Tree(1).empty());
}

TEST_CASE("asking a leaf for the wrong kind names what it holds") {
  CHECK_THROWS_WITH(Tree(1).tensor(), "expected a tensor, but the tree holds int 1");
  CHECK_THROWS_WITH(Tree(torch::ones({2, 3})).to_int(), "expected an integer, but the tree holds float32[2, 3]");
  CHECK_THROWS_WITH(Tree::dict().str(), "expected a string, but the tree holds dict(0)");
  CHECK_THROWS_AS(Tree(torch::ones({2})).to_double(), kd::TypeError);
}

TEST_CASE("dicts keep insertion order and replace existing keys in place") {
  Tree t = Tree::dict({{"b", 1}, {"a", 2}, {"c", 3}});
  CHECK(t.keys() == std::vector<std::string>{"b", "a", "c"});
  t.insert("a", 20);
  CHECK(t.keys() == std::vector<std::string>{"b", "a", "c"});
  CHECK(t.at("a").to_int() == 20);
  CHECK(t.erase("b"));
  CHECK_FALSE(t.erase("b"));
  CHECK(t.keys() == std::vector<std::string>{"a", "c"});
}

TEST_CASE("copies share tensors and are not changed by edits to another copy") {
  Tree a = Tree::dict({{"x", torch::ones({3})}});
  Tree b = a;
  CHECK(b.at("x").tensor().data_ptr() == a.at("x").tensor().data_ptr());
  b.insert("y", 1);
  CHECK(a.size() == 1);
  CHECK(b.size() == 2);
  CHECK(b.at("x").tensor().data_ptr() == a.at("x").tensor().data_ptr());
}

TEST_CASE("get follows keys, list indices and digit keys") {
  Tree t = Tree::dict({{"tokens", Tree::list({Tree(10), Tree(11), Tree(12)})}});
  t = t.set("layers.0.w", 5);
  CHECK(t.get("tokens[0]").to_int() == 10);
  CHECK(t.get("tokens[-1]").to_int() == 12);
  CHECK(t.get("tokens.1").to_int() == 11);  // a digit key indexes a list
  CHECK(t.get("layers.0.w").to_int() == 5);
  CHECK(t.get("layers[0].w").to_int() == 5);  // an index names a digit key of a dict
  CHECK(t.contains(Path::parse("layers.0")));
  CHECK_FALSE(t.contains(Path::parse("layers.1")));
  CHECK_FALSE(t.try_get(Path::parse("tokens[3]")).has_value());
}

TEST_CASE("set returns a new tree, creates missing dicts and shares the untouched parts") {
  const Tree params = make_params();
  const Tree changed = params.set("encoder.1.bias", torch::ones({2}));
  CHECK(params.get("encoder.1.bias").tensor().sum().item<float>() == 0);
  CHECK(changed.get("encoder.1.bias").tensor().sum().item<float>() == 2);
  CHECK(changed.get("encoder.0").is_same(params.get("encoder.0")));
  CHECK(changed.get("head").is_same(params.get("head")));
  const Tree deeper = Tree().set("a.b.c", 1);
  CHECK(deeper.get("a.b.c").to_int() == 1);
  const Tree in_list = Tree::dict({{"l", Tree::list({Tree(1), Tree(2)})}}).set("l[1]", 5);
  CHECK(in_list.get("l[1]").to_int() == 5);
}

TEST_CASE("set refuses globs, missing list items and paths through leaves") {
  const Tree params = make_params();
  CHECK_THROWS_AS(params.set("**.bias", 1), kd::NotSupportedError);
  CHECK_THROWS_AS(Tree::dict({{"l", Tree::list()}}).set("l[0]", 1), kd::KeyError);
  CHECK_THROWS_WITH(params.set("head.weight.x", 1),
                    "cannot set \"head.weight.x\": \"head.weight\" is float32[1, 2], not a dict");
}

TEST_CASE("flatten lists every leaf with its path in tree order") {
  const auto flat = make_params().flatten();
  std::vector<std::string> paths;
  for (const auto& [p, t] : flat) paths.push_back(p);
  CHECK(paths == std::vector<std::string>{"encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
                                          "head.weight"});
  const Tree with_list = Tree::dict({{"x", Tree::list({Tree(1), Tree::dict({{"y", 2}})})}});
  const auto flat2 = with_list.flatten("batch");
  REQUIRE(flat2.size() == 2);
  CHECK(flat2[0].first == "batch.x[0]");
  CHECK(flat2[1].first == "batch.x[1].y");
  CHECK(flat2[1].second.to_int() == 2);
}

TEST_CASE("star matches exactly one level") {
  const Tree params = make_params();
  CHECK(paths_of(params.glob(Path::parse("encoder.*.bias"))) ==
        std::vector<std::string>{"encoder.0.bias", "encoder.1.bias"});
  CHECK(paths_of(params.glob(Path::parse("*.weight"))) == std::vector<std::string>{"head.weight"});
  CHECK(paths_of(params.glob(Path::parse("*"))) == std::vector<std::string>{"encoder", "head"});
}

TEST_CASE("double star matches any depth, including none") {
  const Tree params = make_params();
  CHECK(paths_of(params.glob(Path::parse("**.weight"))) ==
        std::vector<std::string>{"encoder.0.weight", "encoder.1.weight", "head.weight"});
  CHECK(paths_of(params.glob(Path::parse("encoder.**.bias"))) ==
        std::vector<std::string>{"encoder.0.bias", "encoder.1.bias"});
  CHECK(paths_of(params.glob(Path::parse("head.**.weight"))) == std::vector<std::string>{"head.weight"});
  // A trailing ** selects the whole sub-tree once, not every node inside it again.
  CHECK(paths_of(params.glob(Path::parse("encoder.**"))) == std::vector<std::string>{"encoder"});
  CHECK(paths_of(params.glob(Path::parse("**.**.bias"))) ==
        std::vector<std::string>{"encoder.0.bias", "encoder.1.bias"});
  CHECK(params.glob(Path::parse("**.gamma")).empty());
}

TEST_CASE("globs walk lists by index") {
  const Tree t = Tree::dict({{"x", Tree::list({Tree::dict({{"y", 1}}), Tree::dict({{"y", 2}})})}});
  CHECK(paths_of(t.glob(Path::parse("x[*].y"))) == std::vector<std::string>{"x[0].y", "x[1].y"});
  CHECK(paths_of(t.glob(Path::parse("x.1.y"))) == std::vector<std::string>{"x[1].y"});
}

TEST_CASE("the part of a glob before the first star must exist") {
  CHECK_THROWS_WITH(make_params().glob(Path::parse("encodr.**.bias")),
                    Catch::Contains("Did you mean \"encoder.**.bias\"?"));
}

TEST_CASE("select keeps the shape of the tree around the matches") {
  const Tree biases = make_params().select("**.bias");
  CHECK(biases.keys() == std::vector<std::string>{"encoder"});
  CHECK(biases.get("encoder").keys() == std::vector<std::string>{"0", "1"});
  CHECK(biases.flatten().size() == 2);
  CHECK(biases.num_elements() == 6);
  CHECK(make_params().select("**.gamma").is_none());
}

TEST_CASE("map applies a function to every tensor leaf and keeps the shape") {
  const Tree params = make_params();
  const Tree doubled = params.map([](const torch::Tensor& t) { return t * 2; });
  CHECK(doubled.get("head.weight").tensor().equal(torch::full({1, 2}, 4.0)));
  CHECK(doubled.num_tensors() == 5);
  const Tree named = params.map_with_path(
      [](const Path& p, const torch::Tensor& t) { return p.str() == "head.weight" ? torch::zeros_like(t) : t; });
  CHECK(named.get("head.weight").tensor().sum().item<float>() == 0);
  CHECK(named.get("encoder.0.weight").tensor().sum().item<float>() == 12);
}

TEST_CASE("describe and to_string show kinds, dtypes and shapes") {
  CHECK(Tree(torch::zeros({128, 10})).describe() == "float32[128, 10]");
  CHECK(Tree(torch::zeros({3}, torch::kLong)).describe() == "int64[3]");
  CHECK(Tree(torch::tensor(1.0, torch::kDouble)).describe() == "float64[]");
  CHECK(Tree::list({Tree(1)}).describe() == "list(1)");
  CHECK(Tree::dict({{"a", torch::zeros({2})}, {"b", Tree::dict({{"c", "s"}})}}).to_string() ==
        "a: float32[2]\nb:\n  c: string \"s\"\n");
}

TEST_CASE("integers read from JSON from outside are checked, not converted with undefined behaviour") {
  using nlohmann::ordered_json;
  CHECK(kd::json_int(ordered_json::parse("-3"), "x") == -3);
  CHECK(kd::json_int(ordered_json::parse("9223372036854775807"), "x") == INT64_MAX);
  // A step of 1e75 in a crafted meta.json (found by the checkpoint fuzz target).
  CHECK_THROWS_WITH(kd::json_int(ordered_json::parse("1e75"), "meta.json's step"),
                    Catch::Contains("meta.json's step is not an integer of 64 bits"));
  CHECK_THROWS_AS(kd::json_int(ordered_json::parse("9223372036854775808"), "x"), kd::CorruptionError);
  CHECK_THROWS_AS(kd::json_int(ordered_json::parse("3.5"), "x"), kd::CorruptionError);
  CHECK_THROWS_AS(kd::json_int(ordered_json::parse("\"3\""), "x"), kd::CorruptionError);
  CHECK(kd::json_size(ordered_json::parse("18446744073709551615"), "x") == UINT64_MAX);
  CHECK_THROWS_AS(kd::json_size(ordered_json::parse("-1"), "x"), kd::CorruptionError);
  CHECK_THROWS_AS(kd::json_size(ordered_json::parse("1e30"), "x"), kd::CorruptionError);
}
