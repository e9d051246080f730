#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/tree/tree.h"

using kd::Tree;

namespace {

std::string key_error(const Tree& t, const char* path) {
  try {
    t.get(path);
  } catch (const kd::KeyError& e) {
    return e.what();
  }
  FAIL("no KeyError for " << path);
  return {};
}

Tree preds() {
  return Tree::dict({{"preds", Tree::dict({{"logits", torch::zeros({2, 10})}, {"probs", torch::zeros({2, 10})}})},
                     {"tokens", Tree::list({Tree(1), Tree(2), Tree(3)})},
                     {"empty", Tree::dict()}});
}

}  // namespace

TEST_CASE("a misspelt key names the full path, the parent's keys and the nearest key") {
  CHECK(key_error(preds(), "preds.logit") ==
        "no key \"preds.logit\" in tree; \"preds\" has: logits, probs. "
        "Did you mean \"preds.logits\"?");
}

TEST_CASE("a misspelt key at the root is fixed in the suggestion with the rest of the path") {
  CHECK(key_error(preds(), "pred.logits") ==
        "no key \"pred.logits\" in tree; the tree has: preds, tokens, empty. "
        "Did you mean \"preds.logits\"?");
}

TEST_CASE("a key with no close match lists the keys without guessing") {
  CHECK(key_error(preds(), "preds.zzzzzz") == "no key \"preds.zzzzzz\" in tree; \"preds\" has: logits, probs");
}

TEST_CASE("an index past the end of a list gives the valid range") {
  CHECK(key_error(preds(), "tokens[5]") ==
        "no key \"tokens[5]\" in tree; \"tokens\" is a list of 3 items "
        "(valid indices: 0 to 2, or negative from the end)");
}

TEST_CASE("a word key on a list suggests indexing") {
  CHECK(key_error(preds(), "tokens.first") ==
        "no key \"tokens.first\" in tree; \"tokens\" is a list of 3 items; "
        "index it with a number, e.g. \"tokens[0]\"");
}

TEST_CASE("a key below a leaf says the leaf has no keys") {
  CHECK(key_error(preds(), "preds.logits.x") ==
        "no key \"preds.logits.x\" in tree; \"preds.logits\" is a leaf (float32[2, 10]), "
        "it has no keys");
}

TEST_CASE("a key in an empty dict says it is empty") {
  CHECK(key_error(preds(), "empty.a") == "no key \"empty.a\" in tree; \"empty\" is an empty dict");
}

TEST_CASE("get with a glob points to glob and select") {
  CHECK_THROWS_AS(preds().get("preds.*"), kd::NotSupportedError);
}
