#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "trainer/common/error.h"
#include "trainer/config/experiment.h"

namespace fs = std::filesystem;
using kd::config::load_experiment;

namespace {

fs::path write(const fs::path& dir, const std::string& name, const std::string& text) {
  fs::create_directories(dir);
  std::ofstream(dir / name) << text;
  return dir / name;
}

}  // namespace

TEST_CASE("base files merge map by map and the including file wins") {
  const fs::path dir = fs::temp_directory_path() / "kd_experiment_test";
  write(dir / "bases", "base.yaml",
        "seed: 1\noptimizer: {type: adam, learning_rate: 0.1, b1: 0.8}\nmodel: {type: MLP, input_size: 4}\n");
  const auto top = write(dir, "top.yaml",
                         "base: bases/base.yaml\noptimizer: {learning_rate: 0.2}\nmodel: {type: CNN, channels: [3]}\n");
  const auto cfg = load_experiment(top.string());
  CHECK(cfg.get_int("seed") == 1);
  CHECK(cfg.child("optimizer").get_double("learning_rate") == 0.2);
  CHECK(cfg.child("optimizer").get_double("b1") == 0.8);
  // A different component type replaces the base's map.
  CHECK(cfg.child("model").keys() == std::vector<std::string>{"type", "channels"});
  CHECK_FALSE(cfg.has("base"));
  // Errors point at the file each value came from.
  CHECK_THROWS_WITH(cfg.child("optimizer").get_int("b1"),
                    Catch::StartsWith((dir / "bases" / "base.yaml").string() + ":2:"));
  CHECK_THROWS_WITH(cfg.child("model").child("channels").as_int(), Catch::StartsWith(top.string() + ":3:"));
  fs::remove_all(dir);
}

TEST_CASE("command-line overrides set values by dotted key, as YAML") {
  const fs::path dir = fs::temp_directory_path() / "kd_experiment_test2";
  const auto top =
      write(dir, "top.yaml", "optimizer: {type: adam, learning_rate: 0.1}\nevals: {test: {num_batches: 3}}\n");
  const auto cfg = load_experiment(
      top.string(),
      {{"optimizer.learning_rate", "3e-4"}, {"workdir", "/tmp/x"}, {"evals", "{}"}, {"train_ds.batch_size", "8"}});
  CHECK(cfg.child("optimizer").get_double("learning_rate") == 3e-4);
  CHECK(cfg.get_string("workdir") == "/tmp/x");
  CHECK(cfg.child("evals").keys().empty());
  CHECK(cfg.child("train_ds").get_int("batch_size") == 8);
  CHECK_THROWS_WITH(load_experiment(top.string(), {{"optimizer.learning_rate.x", "1"}}),
                    Catch::Contains("\"optimizer.learning_rate\" is not a map"));
  const auto bad = load_experiment(top.string(), {{"optimizer.learning_rate", "fast"}});
  CHECK_THROWS_WITH(bad.child("optimizer").get_double("learning_rate"),
                    "--cfg.optimizer.learning_rate: \"optimizer.learning_rate\" must be a number, but it is \"fast\"");
  fs::remove_all(dir);
}

TEST_CASE("override arguments are parsed from the command line") {
  std::vector<std::string> rest;
  const auto o = kd::config::parse_overrides({"--cfg.a.b=1", "x", "--cfg.c={}"}, &rest);
  REQUIRE(o.size() == 2);
  CHECK(o[0] == kd::config::Override{"a.b", "1"});
  CHECK(o[1] == kd::config::Override{"c", "{}"});
  CHECK(rest == std::vector<std::string>{"x"});
  CHECK_THROWS_AS(kd::config::parse_overrides({"--cfg.a"}, nullptr), kd::ConfigError);
}

TEST_CASE("a base cycle and a missing base are reported") {
  const fs::path dir = fs::temp_directory_path() / "kd_experiment_test3";
  write(dir, "a.yaml", "base: b.yaml\n");
  write(dir, "b.yaml", "base: a.yaml\n");
  CHECK_THROWS_WITH(load_experiment((dir / "a.yaml").string()), Catch::Contains("cycle"));
  write(dir, "c.yaml", "base: nope.yaml\n");
  CHECK_THROWS_AS(load_experiment((dir / "c.yaml").string()), kd::IOError);
  // A directory, `.`, an empty string or a list: said as such, with the line.
  fs::create_directories(dir / "configs");
  write(dir, "d.yaml", "seed: 1\nbase: configs\n");
  CHECK_THROWS_WITH(
      load_experiment((dir / "d.yaml").string()),
      Catch::Contains("d.yaml:2: base: \"configs\" is a directory") && Catch::Contains("configs/common.yaml"));
  write(dir, "e.yaml", "base: .\n");
  CHECK_THROWS_WITH(load_experiment((dir / "e.yaml").string()), Catch::Contains("is a directory"));
  write(dir, "f.yaml", "base: ''\n");
  CHECK_THROWS_WITH(load_experiment((dir / "f.yaml").string()), Catch::Contains("f.yaml:1: `base` must name"));
  write(dir, "g.yaml", "base: [a.yaml]\n");
  CHECK_THROWS_WITH(load_experiment((dir / "g.yaml").string()), Catch::Contains("`base` must name"));
  fs::remove_all(dir);
}

TEST_CASE("an override that adds an unknown key is blamed on the override, not on the file") {
  const fs::path dir = fs::temp_directory_path() / "kd_experiment_test_blame";
  const auto file = write(dir, "exp.yaml", "optimizer: {type: adam, learning_rate: 0.1}\n");
  const auto cfg = load_experiment(file.string(), {{"optimizer.learnig_rate", "1"}});
  const auto optimizer = cfg.child("optimizer");
  optimizer.get_string("type");
  optimizer.get_double("learning_rate");
  CHECK_THROWS_WITH(optimizer.check_unknown_keys(),
                    Catch::StartsWith("--cfg.optimizer.learnig_rate: unknown key \"learnig_rate\"") &&
                        Catch::Contains("Did you mean \"learning_rate\""));
  CHECK_THROWS_WITH(load_experiment(file.string(), {{"seed", "&a [*a]"}}),
                    Catch::Contains("--cfg.seed") && Catch::Contains("nested deeper"));
}

TEST_CASE("overrides reach into lists by index, and name the list of a bad index") {
  const fs::path dir = fs::temp_directory_path() / "kd_experiment_test_lists";
  const auto top = write(dir, "top.yaml",
                         "train_ds:\n  transforms:\n    - {type: ValueRange, vrange: [0, 1]}\n"
                         "    - {type: RandomFlip, key: image}\nmodel: {hidden_sizes: [64, 32]}\n");
  const auto cfg = load_experiment(top.string(), {{"train_ds.transforms[0].vrange", "[0, 2]"},
                                                  {"model.hidden_sizes[1]", "16"},
                                                  {"train_ds.transforms[1]", "{type: RandomCrop, size: 8}"}});
  const auto transforms = cfg.child("train_ds").child("transforms").elements();
  REQUIRE(transforms.size() == 2);
  CHECK(transforms[0].get_double_list("vrange") == std::vector<double>{0, 2});
  CHECK(transforms[0].get_string("type") == "ValueRange");
  CHECK(transforms[1].get_string("type") == "RandomCrop");
  CHECK(cfg.child("model").get_int_list("hidden_sizes") == std::vector<int64_t>{64, 16});
  // A value set through an index is blamed on the override.
  CHECK_THROWS_WITH(transforms[1].get_bool("size"), Catch::StartsWith("--cfg.train_ds.transforms[1]"));
  CHECK_THROWS_WITH(load_experiment(top.string(), {{"train_ds.transforms[2].vrange", "[0, 2]"}}),
                    Catch::Contains("\"train_ds.transforms\" has 2 elements (indices 0 to 1), not [2]"));
  CHECK_THROWS_WITH(load_experiment(top.string(), {{"model[0]", "1"}}), Catch::Contains("\"model\" is not a list"));
  CHECK_THROWS_WITH(load_experiment(top.string(), {{"train_ds.transforms.vrange", "1"}}),
                    Catch::Contains("\"train_ds.transforms\" is not a map"));
  CHECK_THROWS_WITH(load_experiment(top.string(), {{"evals[0]", "1"}}), Catch::Contains("no list \"evals\""));
  for (const char* bad : {"a[", "a]", "a[x]", "a[-1]", "a[0]b", "[0]", "a..b", "a."}) {
    INFO(bad);
    CHECK_THROWS_AS(load_experiment(top.string(), {{bad, "1"}}), kd::ConfigError);
  }
  fs::remove_all(dir);
}

TEST_CASE("an override's value may be the next argument, as Kauldron's command line accepts") {
  std::vector<std::string> rest;
  const auto o = kd::config::parse_overrides({"--cfg.seed", "3", "--cfg.a.b=1", "--cfg.l[0]", "{x: 1}", "y"}, &rest);
  REQUIRE(o.size() == 3);
  CHECK(o[0] == kd::config::Override{"seed", "3"});
  CHECK(o[1] == kd::config::Override{"a.b", "1"});
  CHECK(o[2] == kd::config::Override{"l[0]", "{x: 1}"});
  CHECK(rest == std::vector<std::string>{"y"});
  CHECK_THROWS_WITH(kd::config::parse_overrides({"--cfg.seed", "--cfg.a=1"}, nullptr),
                    Catch::Contains("--cfg.seed=VALUE or --cfg.seed VALUE"));
}

// kd's one rule for a value put where there is one, in a file over its base and in an override.
TEST_CASE(
    "maps merge, {} empties, null restores the default, !replace and another type replace: in files and overrides") {
  const fs::path dir = fs::temp_directory_path() / "kd_experiment_test_merge";
  write(dir, "base.yaml",
        "evals: {test: {num_batches: 3}, val: {num_batches: 1}}\n"
        "optimizer: {type: adam, learning_rate: 0.1, b1: 0.8}\n"
        "seed: 4\n");
  // `evals: {}` in a file empties the base's evals, as --cfg.evals={} does.
  const auto empty = write(dir, "empty.yaml", "base: base.yaml\nevals: {}\n");
  CHECK(load_experiment(empty.string()).child("evals").keys().empty());
  const auto base = (dir / "base.yaml").string();
  CHECK(load_experiment(base, {{"evals", "{}"}}).child("evals").keys().empty());
  // A map merges key by key, from a file or an override alike.
  const auto lr = write(dir, "lr.yaml", "base: base.yaml\noptimizer: {learning_rate: 0.2}\n");
  for (const auto& cfg :
       {load_experiment(lr.string()), load_experiment(base, {{"optimizer", "{learning_rate: 0.2}"}})}) {
    CHECK(cfg.child("optimizer").get_string("type") == "adam");
    CHECK(cfg.child("optimizer").get_double("learning_rate") == 0.2);
    CHECK(cfg.child("optimizer").get_double("b1") == 0.8);
  }
  // null removes the key (its default again); a nested null removes only that key.
  const auto nulls = write(dir, "nulls.yaml", "base: base.yaml\nseed: null\nevals: {val: null}\n");
  for (const auto& cfg :
       {load_experiment(nulls.string()), load_experiment(base, {{"seed", "null"}, {"evals.val", "~"}})}) {
    CHECK_FALSE(cfg.has("seed"));
    CHECK(cfg.get_int("seed", 0) == 0);
    CHECK(cfg.child("evals").keys() == std::vector<std::string>{"test"});
  }
  // !replace, and a component of another type, replace the map whole.
  const auto replaced =
      write(dir, "replace.yaml", "base: base.yaml\noptimizer: !replace {type: adam, learning_rate: 0.3}\n");
  for (const auto& cfg : {load_experiment(replaced.string()),
                          load_experiment(base, {{"optimizer", "!replace {type: adam, learning_rate: 0.3}"}}),
                          load_experiment(base, {{"optimizer", "{type: sgd, learning_rate: 0.3}"}})}) {
    CHECK_FALSE(cfg.child("optimizer").has("b1"));
    CHECK(cfg.child("optimizer").get_double("learning_rate") == 0.3);
  }
  CHECK(load_experiment(replaced.string()).to_yaml().find("!replace") == std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("a YAML alias is a copy: an override of its anchor changes only that key, and warns") {
  const fs::path dir = fs::temp_directory_path() / "kd_experiment_test_alias";
  const auto f = write(dir, "x.yaml",
                       "num_train_steps: &steps 200\n"
                       "schedule:\n"
                       "  decay_steps: *steps\n"
                       "model: &m {type: MLP, hidden: [8]}\n"
                       "teacher: *m\n");
  std::vector<std::string> warnings;
  const auto cfg = load_experiment(f.string(), {{"num_train_steps", "400"}, {"model.hidden", "[4]"}}, &warnings);
  CHECK(cfg.get_int("num_train_steps") == 400);
  CHECK(cfg.child("schedule").get_int("decay_steps") == 200);
  CHECK(cfg.child("model").get_int_list("hidden") == std::vector<int64_t>{4});
  CHECK(cfg.child("teacher").get_int_list("hidden") == std::vector<int64_t>{8});
  REQUIRE(warnings.size() == 2);
  CHECK_THAT(warnings[0], Catch::Contains("\"schedule.decay_steps\" at " + f.string() + ":3") &&
                              Catch::Contains("decay_steps: ${num_train_steps}"));
  CHECK_THAT(warnings[1], Catch::Contains("\"teacher\" at " + f.string() + ":5"));
  // Overriding the copy too, or the copy alone, says nothing.
  warnings.clear();
  load_experiment(f.string(), {{"num_train_steps", "400"}, {"schedule.decay_steps", "400"}}, &warnings);
  load_experiment(f.string(), {{"schedule.decay_steps", "9"}}, &warnings);
  CHECK(warnings.empty());
  fs::remove_all(dir);
}

TEST_CASE("a list element that a YAML alias copied, a null where nothing is, and a saved reference under a file") {
  const fs::path dir = fs::temp_directory_path() / "kd_experiment_test_more";
  const auto f = write(dir, "x.yaml", "steps: &s 100\nmilestones: [*s, 200]\n");
  std::vector<std::string> warnings;
  const auto cfg = load_experiment(f.string(), {{"steps", "300"}}, &warnings);
  CHECK(cfg.get_int_list("milestones") == std::vector<int64_t>{100, 200});
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("\"milestones[0]\""));
  // null removes what is there, and is nothing where nothing is (no empty section appears).
  const auto none = write(dir, "none.yaml", "seed: 1\n");
  const auto cleared = load_experiment(none.string(), {{"profiler.first_profile", "null"}, {"evals", "{val: null}"}});
  CHECK_FALSE(cleared.has("profiler"));
  CHECK(cleared.child("evals").keys().empty());
  // A saved experiment's references are put back before a file built on it sets its own values.
  write(dir, "config.yaml",
        "num_train_steps: 200\ndecay_steps: 200\nreferences: {decay_steps: \"${num_train_steps}\"}\n");
  const auto child = write(dir, "child.yaml", "base: config.yaml\ndecay_steps: 50\n");
  CHECK(load_experiment(child.string()).get_int("decay_steps") == 50);
  const auto follows = write(dir, "follows.yaml", "base: config.yaml\nnum_train_steps: 70\n");
  CHECK(load_experiment(follows.string()).get_int("decay_steps") == 70);
  fs::remove_all(dir);
}
