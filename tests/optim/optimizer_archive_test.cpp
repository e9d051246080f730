#include <catch2/catch.hpp>

#include <sstream>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/optim/optimizer_state.h"

namespace {

// Two Adam steps on a small MLP with fixed gradients.
struct Trained {
  torch::nn::Sequential model{torch::nn::Linear(3, 4), torch::nn::ReLU(), torch::nn::Linear(4, 2)};
  torch::optim::Adam adam{model->parameters(), torch::optim::AdamOptions(0.01).amsgrad(true)};

  Trained() {
    torch::manual_seed(0);
    for (int step = 1; step <= 2; ++step) {
      adam.zero_grad();
      for (auto& p : model->parameters()) p.mutable_grad() = torch::full_like(p, 0.5 * step) + p.detach();
      adam.step();
    }
  }
};

// `out` read back as a file would be.
torch::serialize::InputArchive reloaded(torch::serialize::OutputArchive& out) {
  std::ostringstream bytes;
  out.save_to(bytes);
  std::istringstream in(bytes.str());
  torch::serialize::InputArchive archive;
  archive.load_from(in);
  return archive;
}

// The archive Optimizer::save writes, read back.
torch::serialize::InputArchive saved(const torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive out;
  optimizer.save(out);
  return reloaded(out);
}

}  // namespace

TEST_CASE("torch::optim's archive of an Adam state reads as the live state, parameter by parameter") {
  Trained a;
  auto archive = saved(a.adam);
  // Read into another model's optimizer: parameters are matched by position, not by address.
  Trained b;
  const kd::Tree read = kd::optim::optimizer_state_from_archive(archive, b.adam, *b.model);
  const kd::Tree live = kd::optim::optimizer_state_tree(a.adam, *a.model);
  const auto read_leaves = read.flatten_paths(), live_leaves = live.flatten_paths();
  REQUIRE(read_leaves.size() == live_leaves.size());
  REQUIRE(read_leaves.size() == 4 * 4);  // 4 parameters: step, exp_avg, exp_avg_sq, max_exp_avg_sq
  for (std::size_t i = 0; i < live_leaves.size(); ++i) {
    INFO(live_leaves[i].first.str());
    CHECK(read.contains(live_leaves[i].first));
    const kd::Tree& want = live_leaves[i].second;
    const kd::Tree got = read.get(live_leaves[i].first);
    if (want.is_tensor()) {
      CHECK(torch::equal(got.tensor(), want.tensor()));
    } else {
      CHECK(got.to_int() == want.to_int());
    }
  }
  // Loaded into b's optimizer, b's next step is a's.
  kd::optim::load_optimizer_state(b.adam, *b.model, read);
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < a.model->parameters().size(); ++i)
      b.model->parameters()[i].copy_(a.model->parameters()[i]);
  }
  for (auto* t : {&a, &b}) {
    t->adam.zero_grad();
    for (auto& p : t->model->parameters()) p.mutable_grad() = torch::full_like(p, 1.5) + p.detach();
    t->adam.step();
  }
  for (std::size_t i = 0; i < a.model->parameters().size(); ++i)
    CHECK(torch::equal(a.model->parameters()[i], b.model->parameters()[i]));
}

TEST_CASE("torch::optim's archive of other parameter groups is refused by count") {
  Trained a;
  auto archive = saved(a.adam);
  torch::nn::Linear other(3, 4);  // 2 parameters where the archive has 4
  torch::optim::Adam adam(other->parameters(), torch::optim::AdamOptions(0.01));
  CHECK_THROWS_AS(kd::optim::optimizer_state_from_archive(archive, adam, *other), kd::CorruptionError);
  CHECK_THROWS_WITH(kd::optim::optimizer_state_from_archive(archive, adam, *other),
                    Catch::Contains("has 4 parameters, the optimizer's 2"));
}

TEST_CASE("an archive that is not an optimizer's is refused") {
  torch::serialize::OutputArchive out;
  out.write("something", torch::ones({2}));
  auto archive = reloaded(out);
  Trained a;
  CHECK_THROWS_WITH(kd::optim::optimizer_state_from_archive(archive, a.adam, *a.model),
                    Catch::Contains("has no state"));
}
