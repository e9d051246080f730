#include <catch2/catch.hpp>

#include <limits>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/config/registry.h"

using kd::config::Node;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const kd::Error& e) {
    return e.what();
  }
  FAIL("no error");
  return {};
}

struct Thing {
  explicit Thing(const Node& o) : size(o.get_int("size", 3)), name(o.get_string("name", "x")) {}
  int64_t size;
  std::string name;
};

}  // namespace

TEST_CASE("typed getters read values and fall back to defaults") {
  const Node n = Node::parse("lr: 3e-4\nsteps: 100\nflag: true\nname: adam\nsizes: [1, 2]\n");
  CHECK(n.get_double("lr") == 3e-4);
  CHECK(n.get_int("steps") == 100);
  CHECK(n.get_bool("flag"));
  CHECK(n.get_string("name") == "adam");
  CHECK(n.get_int_list("sizes") == std::vector<int64_t>{1, 2});
  CHECK(n.get_double("missing", 0.5) == 0.5);
  CHECK(n.keys() == std::vector<std::string>{"lr", "steps", "flag", "name", "sizes"});
}

TEST_CASE("a wrong type names the file, line, key, expected type and value") {
  const Node n = Node::parse("optimizer:\n  learning_rate: fast\n", "exp.yaml");
  CHECK(error_of([&] { n.child("optimizer").get_double("learning_rate"); }) ==
        "exp.yaml:2:18: \"optimizer.learning_rate\" must be a number, but it is \"fast\"");
  CHECK(error_of([&] { n.get_int("optimizer"); }) == "exp.yaml:2:3: \"optimizer\" must be an integer, but it is a map");
}

TEST_CASE("a missing required key is named with its full path") {
  const Node n = Node::parse("model:\n  type: MLP\n", "exp.yaml");
  CHECK(error_of([&] { n.child("model").get_int("output_size"); }) ==
        "exp.yaml:2:3: missing required key \"model.output_size\"");
}

TEST_CASE("an unknown key is reported with its line and the nearest known key") {
  const Node n = Node::parse("size: 4\nnmae: y\n", "exp.yaml");
  Thing t(n);
  CHECK(t.size == 4);
  CHECK(error_of([&] { n.check_unknown_keys(); }) ==
        "exp.yaml:2:1: unknown key \"nmae\". Did you mean \"name\"? (valid keys: name, size)");
}

TEST_CASE("invalid YAML is reported with its position") {
  CHECK_THAT(error_of([] { Node::parse("a: [1, 2\n", "bad.yaml"); }),
             Catch::StartsWith("bad.yaml:") && Catch::Contains("invalid YAML"));
}

TEST_CASE("a key given twice in one map is an error naming both lines, at any depth") {
  CHECK(error_of([] { Node::parse("seed: 1\nmodel: {type: MLP}\nseed: 2\n", "exp.yaml"); }) ==
        "exp.yaml:3:1: the key \"seed\" is given twice in one map (lines 1 and 3); keep one");
  CHECK_THAT(error_of([] { Node::parse("optimizer:\n  type: adam\n  learning_rate: 1\n  type: sgd\n", "e.yaml"); }),
             Catch::Contains("e.yaml:4:3: the key \"type\" is given twice") && Catch::Contains("lines 2 and 4"));
  // The same key in two maps is fine.
  CHECK_NOTHROW(Node::parse("a: {x: 1}\nb: {x: 2}\n", "ok.yaml"));
}

TEST_CASE("a missing file is an IO error naming the file") {
  CHECK_THROWS_AS(Node::load_file("/nonexistent/exp.yaml"), kd::IOError);
}

TEST_CASE("the registry builds by type, suggests near names and rejects duplicates") {
  kd::config::Registry<Thing> registry("thing");
  registry.add("Thing", [](const Node& o) { return std::make_shared<Thing>(o); });
  const auto built = registry.create(Node::parse("type: Thing\nsize: 7\n"));
  CHECK(built->size == 7);
  CHECK_THAT(error_of([&] { registry.create(Node::parse("type: Thng\n", "e.yaml")); }),
             Catch::Contains("unknown thing type \"Thng\". Did you mean Thing?"));
  CHECK_THAT(error_of([&] { registry.create(Node::parse("type: Thing\nsiz: 1\n", "e.yaml")); }),
             Catch::Contains("unknown key \"siz\". Did you mean \"size\"?"));
  CHECK_THROWS_WITH(registry.add("Thing", nullptr), "a thing named \"Thing\" is already registered");
}

TEST_CASE("a self-referential alias or an alias bomb is a ConfigError, not a crash or gigabytes") {
  CHECK_THROWS_WITH(kd::config::Node::parse("a: &a [*a]\n", "cycle.yaml"),
                    Catch::Contains("cycle.yaml:1:") && Catch::Contains("nested deeper than 64 levels"));
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char level = 'b'; level <= 'h'; ++level) {
    const char below = static_cast<char>(level - 1);
    bomb += std::string(1, level) + ": &" + level + " [";
    for (int i = 0; i < 10; ++i) bomb += std::string(i ? ", *" : "*") + below;
    bomb += "]\n";
  }
  CHECK_THROWS_WITH(kd::config::Node::parse(bomb, "bomb.yaml"),
                    Catch::Contains("bomb.yaml") && Catch::Contains("more than 100000 nodes"));
  // Ordinary anchors and aliases still work.
  const auto ok = kd::config::Node::parse("a: &x {b: 1}\nc: *x\n");
  CHECK(ok.child("c").get_int("b") == 1);
}

TEST_CASE("a section of the wrong type is a ConfigError naming it, not a section left at its defaults") {
  const auto root = kd::config::Node::parse("checkpointer: 5\nevals: [test]\nempty:\n", "exp.yaml");
  CHECK_THROWS_WITH(root.child("checkpointer").find("max_to_keep"),
                    Catch::Contains("exp.yaml:1:15") && Catch::Contains("\"checkpointer\" must be a map") &&
                        Catch::Contains("\"5\""));
  CHECK_THROWS_WITH(root.child("evals").keys(),
                    Catch::Contains("\"evals\" must be a map") && Catch::Contains("a list"));
  CHECK(root.child("empty").keys().empty());  // an empty section is a map without keys
  CHECK(!root.child("empty").find("x"));
}

TEST_CASE("range getters name the key, the value and the range") {
  const auto n = kd::config::Node::parse("opt: {lr: -1, decay: .nan, sizes: [4, 0], n: 3}\n", "exp.yaml").child("opt");
  CHECK_THROWS_WITH(n.get_double_in("lr", std::nullopt, 0, 1),
                    Catch::Contains("exp.yaml:1:11") && Catch::Contains("\"opt.lr\" must be in [0, 1], got -1"));
  CHECK_THROWS_WITH(n.get_double_in("decay", 0.0, 0, std::numeric_limits<double>::infinity()),
                    Catch::Contains("\"opt.decay\" must be a finite number, but it is \".nan\""));
  CHECK_THROWS_WITH(n.get_int_list_in("sizes", std::nullopt, 1, 100), Catch::Contains("element 1 is 0"));
  CHECK(n.get_int_in("n", std::nullopt, 1, 3) == 3);
  CHECK(n.get_int_in("absent", 7, 1, 10) == 7);
}

TEST_CASE("add<T> registers a component built from its options, and built_once builds a registry once") {
  kd::config::Registry<Thing> registry("thing");
  registry.add<Thing>("Thing", "size=3, name=x");
  const auto built = registry.create(Node::parse("type: Thing\nname: y\n"));
  CHECK(built->size == 3);
  CHECK(built->name == "y");
  CHECK(registry.doc("Thing") == "size=3, name=x");

  int fills = 0;
  const auto get = [&]() -> kd::config::Registry<Thing>& {
    return kd::config::Registry<Thing>::built_once("thing", [&](kd::config::Registry<Thing>& r) {
      ++fills;
      r.add<Thing>("Thing");
    });
  };
  kd::config::Registry<Thing>& first = get();
  kd::config::Registry<Thing>& second = get();
  CHECK(&first == &second);
  CHECK(fills == 1);
  CHECK(first.names() == std::vector<std::string>{"Thing"});
}

TEST_CASE("section gives a component's map, or an empty map of defaults when absent or null") {
  const Node n = Node::parse("checkpointer: {max_to_keep: 2}\nwriter: null\n", "e.yaml");
  CHECK(n.section("checkpointer").get_int("max_to_keep", 3) == 2);
  CHECK(n.section("writer").get_bool("csv", true));
  CHECK(n.section("absent").keys().empty());
  CHECK_NOTHROW(n.section("absent").check_unknown_keys());
  // A section of the wrong type is reported where it is read.
  const Node bad = Node::parse("checkpointer: 5\n", "e.yaml");
  CHECK_THAT(error_of([&] { bad.section("checkpointer").get_int("max_to_keep", 3); }),
             Catch::Contains("e.yaml:1:") && Catch::Contains("must be a map"));
}
