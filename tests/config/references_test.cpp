// References between keys (${...}), resolved after the files and overrides are merged; the
// expected values are worked out by hand (and Python's // and % for negative numbers).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/config/experiment.h"

namespace fs = std::filesystem;
using kd::config::load_experiment;
using kd::config::Override;
using kd::testing::made_fresh_dir;

namespace {

struct Experiment {
  fs::path dir = made_fresh_dir("kd_references_test_");
  ~Experiment() { fs::remove_all(dir); }
  std::string file(const std::string& name, const std::string& text) const {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  }
};

}  // namespace

TEST_CASE("a reference takes the value after every override") {
  Experiment e;
  const auto f = e.file("x.yaml",
                        "num_train_steps: 200\n"
                        "optimizer:\n"
                        "  learning_rate: {type: WarmupCosineDecay, peak_value: 1e-3, warmup_steps: 10,\n"
                        "                  decay_steps: \"${num_train_steps}\"}\n");
  CHECK(load_experiment(f).child("optimizer").child("learning_rate").get_int("decay_steps") == 200);
  const auto cfg = load_experiment(f, {{"num_train_steps", "400"}});
  CHECK(cfg.child("optimizer").child("learning_rate").get_int("decay_steps") == 400);
  // An override of the referring key itself wins.
  CHECK(load_experiment(f, {{"optimizer.learning_rate.decay_steps", "7"}, {"num_train_steps", "400"}})
            .child("optimizer")
            .child("learning_rate")
            .get_int("decay_steps") == 7);
}

TEST_CASE("arithmetic in a reference: integers stay integers, a whole result is an integer") {
  Experiment e;
  const auto f = e.file("x.yaml",
                        "steps: 4680\nten: 10\nneg: -7\n"
                        "a: ${steps * 0.9}\n"      // 4212.0 -> 4212
                        "b: ${ten / 4}\n"          // 2.5
                        "c: ${ten // 4}\n"         // 2
                        "d: ${neg // 2}\n"         // floor(-3.5) = -4
                        "e: ${neg % 3}\n"          // -7 - 3 * (-3) = 2
                        "f: ${(ten + 2) * -3}\n"   // -36
                        "g: ${steps - ten - 1}\n"  // 4669
                        "h: ${2.5e1 + 1}\n"        // 26
                        "i: ${ten * 0.15}\n");     // the double 10 * 0.15, not whole: kept as it is
  const auto cfg = load_experiment(f);
  CHECK(cfg.get_string("a") == "4212");
  CHECK(cfg.get_int("a") == 4212);
  CHECK(cfg.get_double("b") == 2.5);
  CHECK(cfg.get_string("c") == "2");
  CHECK(cfg.get_int("d") == -4);
  CHECK(cfg.get_int("e") == 2);
  CHECK(cfg.get_int("f") == -36);
  CHECK(cfg.get_int("g") == 4669);
  CHECK(cfg.get_int("h") == 26);
  CHECK(cfg.get_double("i") == 10 * 0.15);
}

TEST_CASE("references inside text, into lists by index, to whole maps, and in chains") {
  Experiment e;
  const auto f = e.file("x.yaml",
                        "seed: 3\n"
                        "name: run-${seed}-of-${count}\n"
                        "count: ${total // 2}\n"
                        "total: 8\n"
                        "train_ds:\n"
                        "  type: Mnist\n"
                        "  transforms: [{type: ValueRange, vrange: [0, 2]}]\n"
                        "top: ${train_ds.transforms[0].vrange[1]}\n"
                        "copy: ${train_ds}\n"
                        "literal: cost $${x}\n");
  const auto cfg = load_experiment(f, {{"seed", "5"}});
  CHECK(cfg.get_string("name") == "run-5-of-4");
  CHECK(cfg.get_int("top") == 2);
  CHECK(cfg.child("copy").get_string("type") == "Mnist");
  CHECK(cfg.child("copy").child("transforms").elements().at(0).get_int_list("vrange") == std::vector<int64_t>{0, 2});
  CHECK(cfg.get_string("literal") == "cost ${x}");
}

TEST_CASE("a reference resolves across base files and overrides") {
  Experiment e;
  e.file("base.yaml", "num_train_steps: 100\nschedule: {decay_steps: \"${num_train_steps}\"}\n");
  const auto top = e.file("top.yaml", "base: base.yaml\nnum_train_steps: 50\n");
  CHECK(load_experiment(top).child("schedule").get_int("decay_steps") == 50);
  CHECK(load_experiment(top, {{"num_train_steps", "70"}}).child("schedule").get_int("decay_steps") == 70);
}

TEST_CASE("broken references are errors naming the file, the line and the fix") {
  Experiment e;
  const auto missing = e.file("missing.yaml", "num_train_steps: 10\nwarmup: ${num_train_step // 10}\n");
  CHECK_THROWS_WITH(load_experiment(missing), Catch::StartsWith(missing + ":2:") &&
                                                  Catch::Contains("no key \"num_train_step\"") &&
                                                  Catch::Contains("Did you mean \"num_train_steps\"?"));
  const auto cycle = e.file("cycle.yaml", "a: ${b}\nb: ${c + 1}\nc: ${a}\n");
  CHECK_THROWS_WITH(load_experiment(cycle),
                    Catch::Contains("cycle: a -> b -> c -> a") && Catch::StartsWith(cycle + ":1:"));
  const auto self = e.file("self.yaml", "m: {x: 1, y: \"${m}\"}\n");
  CHECK_THROWS_WITH(load_experiment(self), Catch::Contains("cycle: m.y -> m.y"));
  const auto text = e.file("text.yaml", "opt: adam\nlr: ${opt * 2}\n");
  CHECK_THROWS_WITH(load_experiment(text), Catch::Contains("\"opt\" is \"adam\", not a number"));
  const auto zero = e.file("zero.yaml", "n: 0\nx: ${10 // n}\n");
  CHECK_THROWS_WITH(load_experiment(zero), Catch::Contains("division by zero"));
  const auto syntax = e.file("syntax.yaml", "n: 1\nx: ${n +}\n");
  CHECK_THROWS_WITH(load_experiment(syntax), Catch::StartsWith(syntax + ":2:") && Catch::Contains("missing"));
  const auto open = e.file("open.yaml", "n: 1\nx: ${n\n");
  CHECK_THROWS_WITH(load_experiment(open), Catch::Contains("without its \"}\""));
  const auto map_in_text = e.file("map.yaml", "m: {a: 1}\nx: see ${m}\n");
  CHECK_THROWS_WITH(load_experiment(map_in_text), Catch::Contains("\"m\" is a map"));
  const auto overflow = e.file("overflow.yaml", "n: 9223372036854775807\nx: ${n + 1}\n");
  CHECK_THROWS_WITH(load_experiment(overflow), Catch::Contains("overflow"));
  // A reference from an override is blamed on the override.
  const auto ok = e.file("ok.yaml", "n: 1\n");
  CHECK_THROWS_WITH(load_experiment(ok, {{"x", "${nn}"}}), Catch::StartsWith("--cfg.x:"));
}

TEST_CASE("the saved experiment holds resolved values and its references, which a rerun follows") {
  Experiment e;
  const auto f = e.file("x.yaml", "num_train_steps: 200\ndecay_steps: ${num_train_steps * 2}\n");
  const std::string saved = load_experiment(f).to_yaml();
  CHECK(saved.find("decay_steps: 400") != std::string::npos);
  CHECK(saved.find("references:") != std::string::npos);
  CHECK(saved.find("${num_train_steps * 2}") != std::string::npos);
  const auto again = e.file("config.yaml", saved);
  CHECK(load_experiment(again).get_int("decay_steps") == 400);
  CHECK(load_experiment(again, {{"num_train_steps", "30"}}).get_int("decay_steps") == 60);
  CHECK(load_experiment(again).to_yaml() == saved);  // saved again, the same text
  // An override of the referring key replaces the reference.
  const auto fixed = load_experiment(again, {{"decay_steps", "5"}});
  CHECK(fixed.get_int("decay_steps") == 5);
  CHECK(fixed.to_yaml().find("references") == std::string::npos);
  const auto bad = e.file("bad.yaml", "n: 1\nreferences: {m: \"${n}\"}\n");
  CHECK_THROWS_WITH(load_experiment(bad), Catch::Contains("references names \"m\", which is not in the experiment"));
}
