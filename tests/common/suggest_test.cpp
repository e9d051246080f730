#include <catch2/catch.hpp>

#include "trainer/common/suggest.h"

TEST_CASE("edit distance counts insertions, deletions and substitutions, ignoring case") {
  CHECK(kd::edit_distance("logits", "logits") == 0);
  CHECK(kd::edit_distance("logit", "logits") == 1);
  CHECK(kd::edit_distance("lgoits", "logits") == 2);
  CHECK(kd::edit_distance("Logits", "logits") == 0);
  CHECK(kd::edit_distance("", "abc") == 3);
  CHECK(kd::edit_distance("kitten", "sitting") == 3);
}

TEST_CASE("nearest returns close candidates, closest first, and nothing for far ones") {
  const std::vector<std::string> keys = {"probs", "logits", "logit_scale", "features"};
  CHECK(kd::nearest("logit", keys) == std::vector<std::string>{"logits", "logit_scale"});
  CHECK(kd::nearest("prob", keys, 1) == std::vector<std::string>{"probs"});
  CHECK(kd::nearest("zzz", keys).empty());
}

TEST_CASE("join_names lists names and counts the ones left out") {
  CHECK(kd::join_names({"a", "b", "c"}) == "a, b, c");
  CHECK(kd::join_names({"a", "b", "c"}, 2) == "a, b, ... (1 more)");
  CHECK(kd::join_names({}).empty());
}
