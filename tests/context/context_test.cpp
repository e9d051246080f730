#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/context/train_state.h"

using kd::Tree;
using kd::train::Context;
using kd::train::TrainState;

namespace {

TrainState small_state() {
  TrainState s;
  s.step = 7;
  s.params = Tree::dict({{"dense", Tree::dict({{"weight", torch::ones({2, 3})}, {"bias", torch::zeros({2})}})}});
  s.collections = Tree::dict({{"bn", Tree::dict({{"running_mean", torch::zeros({2})}})}});
  s.opt_state = Tree::dict({{"dense", Tree::dict({{"weight", Tree::dict({{"exp_avg", torch::zeros({2, 3})}})}})}});
  return s;
}

Tree small_batch() { return Tree::dict({{"image", torch::rand({4, 3})}, {"label", torch::tensor({0, 1, 1, 0})}}); }

std::string key_error(const Context& ctx, const char* path) {
  try {
    ctx.get(path);
  } catch (const kd::KeyError& e) {
    return e.what();
  }
  FAIL("no KeyError for " << path);
  return {};
}

}  // namespace

TEST_CASE("the context has the seed's thirteen fields in order") {
  std::vector<std::string> names;
  for (const auto& f : Context::fields()) names.emplace_back(f.name);
  CHECK(names == std::vector<std::string>{"step", "batch", "params", "collections", "preds", "interms", "loss_states",
                                          "loss_total", "grads", "updates", "opt_state", "metric_states",
                                          "summary_states"});
}

TEST_CASE("from_state_and_batch fills step, batch, params, collections and opt_state only") {
  const TrainState state = small_state();
  const Tree batch = small_batch();
  const Context ctx = Context::from_state_and_batch(state, batch);
  CHECK(ctx.step == 7);
  CHECK(ctx.batch.is_same(batch));
  CHECK(ctx.params.is_same(state.params));
  CHECK(ctx.collections.is_same(state.collections));
  CHECK(ctx.opt_state.is_same(state.opt_state));
  for (const Tree* t : {&ctx.preds, &ctx.interms, &ctx.loss_states, &ctx.loss_total, &ctx.grads, &ctx.updates,
                        &ctx.metric_states, &ctx.summary_states}) {
    CHECK(t->is_none());
  }
  CHECK(ctx.get("step").to_int() == 7);
  CHECK(ctx.get("batch.label").tensor().equal(batch.get("label").tensor()));
  CHECK(ctx.get("params.dense.weight").tensor().data_ptr() == state.params.get("dense.weight").tensor().data_ptr());
}

TEST_CASE("replace changes the named fields and shares the others") {
  const Context ctx = Context::from_state_and_batch(small_state(), small_batch());
  const Tree preds = Tree::dict({{"logits", torch::zeros({4, 2})}});
  const Context next = ctx.replace({.step = 8, .preds = preds, .loss_total = Tree(torch::tensor(1.5))});
  CHECK(next.step == 8);
  CHECK(ctx.step == 7);
  CHECK(next.preds.is_same(preds));
  CHECK(ctx.preds.is_none());
  CHECK(next.loss_total.to_double() == 1.5);
  CHECK(next.batch.is_same(ctx.batch));
  CHECK(next.params.is_same(ctx.params));
  CHECK(next.get("batch.image").tensor().data_ptr() == ctx.get("batch.image").tensor().data_ptr());
}

TEST_CASE("flatten lists every leaf in field order with field-prefixed paths") {
  const Context ctx = Context::from_state_and_batch(small_state(), small_batch())
                          .replace({.preds = Tree::dict({{"logits", torch::zeros({4, 2})}}),
                                    .grads = Tree::dict({{"dense", Tree::dict({{"bias", torch::zeros({2})}})}})});
  std::vector<std::string> paths;
  for (const auto& [p, t] : ctx.flatten()) paths.push_back(p);
  CHECK(paths == std::vector<std::string>{"step", "batch.image", "batch.label", "params.dense.weight",
                                          "params.dense.bias", "collections.bn.running_mean", "preds.logits",
                                          "grads.dense.bias", "opt_state.dense.weight.exp_avg"});
  CHECK(ctx.flatten().front().second.to_int() == 7);
}

TEST_CASE("get_aux_state returns only the requested states") {
  const Context ctx = Context{}.replace({.loss_states = Tree::dict({{"xent", 1}}),
                                         .metric_states = Tree::dict({{"acc", 2}}),
                                         .summary_states = Tree::dict({{"img", 3}})});
  const auto none = ctx.get_aux_state();
  CHECK(none.loss_states.is_none());
  CHECK(none.metric_states.is_none());
  CHECK(none.summary_states.is_none());
  const auto some = ctx.get_aux_state({.return_losses = true, .return_summaries = true});
  CHECK(some.loss_states.get("xent").to_int() == 1);
  CHECK(some.metric_states.is_none());
  CHECK(some.summary_states.get("img").to_int() == 3);
  const auto all = ctx.get_aux_state({.return_losses = true, .return_metrics = true, .return_summaries = true});
  CHECK(all.metric_states.get("acc").to_int() == 2);
}

TEST_CASE("reading an empty field says which stage fills it") {
  const Context ctx = Context::from_state_and_batch(small_state(), small_batch());
  CHECK(key_error(ctx, "grads.dense.weight") ==
        "no key \"grads.dense.weight\" in context; \"grads\" is empty at this point: "
        "grads are filled after the backward pass");
  CHECK_THAT(key_error(ctx, "preds.logits"), Catch::EndsWith("preds are filled by the model forward"));
  CHECK_THAT(key_error(ctx, "updates"), Catch::EndsWith("updates are filled by the optimizer step"));
  CHECK_THAT(key_error(ctx, "metric_states.acc"), Catch::Contains("filled by the metrics"));
}

TEST_CASE("a misspelt key in the context names the field's keys and the nearest path") {
  const Context ctx =
      Context::from_state_and_batch(small_state(), small_batch())
          .replace({.preds = Tree::dict({{"logits", torch::zeros({4, 2})}, {"probs", torch::zeros({4, 2})}})});
  CHECK(key_error(ctx, "preds.logit") ==
        "no key \"preds.logit\" in context; \"preds\" has: logits, probs. "
        "Did you mean \"preds.logits\"?");
  CHECK(key_error(ctx, "pred.logits") ==
        "no key \"pred.logits\" in context; the context has: step, batch, params, collections, "
        "preds, interms, loss_states, loss_total, grads, updates, opt_state, metric_states, "
        "summary_states. Did you mean \"preds.logits\"?");
  CHECK_THAT(key_error(ctx, "batch.imag"), Catch::EndsWith("Did you mean \"batch.image\"?"));
  CHECK_THAT(key_error(ctx, "step.x"), Catch::Contains("\"step\" is a leaf (int 7)"));
}

TEST_CASE("contains and glob read the context by path") {
  const Context ctx = Context::from_state_and_batch(small_state(), small_batch());
  CHECK(ctx.contains(kd::Path::parse("params.dense.bias")));
  CHECK(ctx.contains(kd::Path::parse("step")));
  CHECK_FALSE(ctx.contains(kd::Path::parse("grads.dense.bias")));
  CHECK_FALSE(ctx.contains(kd::Path::parse("params.dense.gamma")));
  const auto biases = ctx.glob(kd::Path::parse("params.**.bias"));
  REQUIRE(biases.size() == 1);
  CHECK(biases[0].first.str() == "params.dense.bias");
  const auto everywhere = ctx.glob(kd::Path::parse("*.dense.weight"));
  REQUIRE(everywhere.size() == 2);
  CHECK(everywhere[0].first.str() == "params.dense.weight");
  CHECK(everywhere[1].first.str() == "opt_state.dense.weight");
  CHECK_THROWS_WITH(ctx.glob(kd::Path::parse("grads.**")), Catch::EndsWith("grads are filled after the backward pass"));
  CHECK_THROWS_WITH(ctx.glob(kd::Path::parse("params.dens.*")),
                    Catch::Contains("in context") && Catch::Contains("Did you mean \"params.dense.*\"?"));
}

TEST_CASE("AuxiliariesState goes to a tree and back, missing entries as empty states") {
  kd::train::AuxiliariesState s;
  s.loss_states = Tree::dict({{"xent", Tree::dict({{"total", torch::tensor(2.0)}, {"count", Tree(int64_t{4})}})}});
  s.metric_states =
      Tree::dict({{"accuracy", Tree::dict({{"total", torch::tensor(3.0)}, {"count", Tree(int64_t{4})}})}});
  const Tree t = s.to_tree();
  CHECK(t.keys() == std::vector<std::string>{"loss_states", "metric_states", "summary_states"});
  const auto back = kd::train::AuxiliariesState::from_tree(t, nullptr);
  CHECK(back.loss_states.get("xent.total").tensor().item<double>() == 2.0);
  CHECK(back.metric_states.get("accuracy.count").to_int() == 4);
  CHECK(back.summary_states.empty());
  const auto partial = kd::train::AuxiliariesState::from_tree(Tree::dict({{"loss_states", s.loss_states}}), nullptr);
  CHECK(partial.metric_states.empty());
  CHECK(!partial.loss_states.empty());
  CHECK(kd::train::AuxiliariesState::from_tree(Tree(), nullptr).empty());
}
