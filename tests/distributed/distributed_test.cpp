// kd::distributed on loopback: two ranks as two threads of this test, meeting on a TCPStore.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <functional>
#include <thread>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/distributed/distributed.h"

using kd::Tree;
namespace dist = kd::distributed;

namespace {

// Runs body(group) on `n` ranks (threads) of one job; rethrows the first failure.
void on_ranks(int n, const std::function<void(dist::ProcessGroup&)>& body, double timeout_s = 30) {
  const int port = kd::distributed::free_port();
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        dist::WorldInfo world;
        world.rank = r;
        world.world_size = n;
        world.master_port = port;
        dist::Options options;
        options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
        auto group = dist::ProcessGroup::create(world, options, c10::Device(c10::kCPU));
        body(*group);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// Sets environment variables for one scope.
class Env {
 public:
  explicit Env(std::vector<std::pair<std::string, std::string>> vars) {
    for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
      if (const char* v = std::getenv(name)) saved_.emplace_back(name, v);
      unsetenv(name);
    }
    for (const auto& [k, v] : vars) setenv(k.c_str(), v.c_str(), 1);
  }
  ~Env() {
    for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
      unsetenv(name);
    }
    for (const auto& [k, v] : saved_) setenv(k.c_str(), v.c_str(), 1);
  }

 private:
  std::vector<std::pair<std::string, std::string>> saved_;
};

}  // namespace

TEST_CASE("the torchrun variables give this process's place, and bad ones name the variable") {
  {
    Env env({});
    CHECK(!dist::world_from_environment());
  }
  {
    Env env({{"RANK", "1"},
             {"WORLD_SIZE", "4"},
             {"LOCAL_RANK", "1"},
             {"LOCAL_WORLD_SIZE", "2"},
             {"MASTER_ADDR", "node0"},
             {"MASTER_PORT", "29400"}});
    const auto w = dist::world_from_environment();
    REQUIRE(w);
    CHECK(w->rank == 1);
    CHECK(w->world_size == 4);
    CHECK(w->local_rank == 1);
    CHECK(w->local_world_size == 2);
    CHECK(w->master_addr == "node0");
    CHECK(w->master_port == 29400);
  }
  {
    Env env({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}});
    CHECK_THROWS_WITH(dist::world_from_environment(), Catch::Contains("RANK=\"x\" is not a non-negative integer"));
  }
  {
    Env env({{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}});
    CHECK_THROWS_AS(dist::world_from_environment(), kd::ConfigError);
    CHECK_THROWS_WITH(dist::world_from_environment(), Catch::Contains("not RANK"));
  }
  {
    Env env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}});
    CHECK_THROWS_WITH(dist::world_from_environment(), Catch::Contains("MASTER_PORT"));
  }
  for (const auto& [local_rank, local_world] :
       std::vector<std::pair<std::string, std::string>>{{"2", "2"}, {"0", "0"}, {"0", "3"}}) {
    Env env({{"RANK", "0"},
             {"WORLD_SIZE", "2"},
             {"LOCAL_RANK", local_rank},
             {"LOCAL_WORLD_SIZE", local_world},
             {"MASTER_ADDR", "h"},
             {"MASTER_PORT", "29400"}});
    INFO("LOCAL_RANK=" << local_rank << " LOCAL_WORLD_SIZE=" << local_world);
    CHECK_THROWS_WITH(dist::world_from_environment(),
                      Catch::Contains("LOCAL_RANK=" + local_rank) && Catch::Contains("do not fit"));
  }
}

TEST_CASE("the distributed options come from the experiment's distributed section, checked") {
  const auto cfg = kd::config::Node::parse("distributed: {timeout_s: 2.5, bucket_mb: 1, backend: gloo}", "x.yaml");
  const auto node = cfg.child("distributed");
  const auto o = dist::Options::from_config(node);
  CHECK(o.timeout == std::chrono::milliseconds(2500));
  CHECK(o.bucket_bytes == (1 << 20));
  CHECK(o.backend == "gloo");
  const auto bad = kd::config::Node::parse("distributed: {backend: mpi}", "x.yaml");
  const auto bad_node = bad.child("distributed");
  CHECK_THROWS_WITH(dist::Options::from_config(bad_node),
                    Catch::Contains("x.yaml:1") && Catch::Contains("auto, gloo or nccl"));
  const auto typo = kd::config::Node::parse("distributed: {timeout: 3}", "x.yaml");
  const auto typo_node = typo.child("distributed");
  CHECK_THROWS_WITH(dist::Options::from_config(typo_node), Catch::Contains("timeout_s"));
}

TEST_CASE("trees of tensors, numbers and strings survive the trip to bytes and back") {
  const Tree tree =
      Tree::dict({{"acc", Tree::dict({{"total", torch::tensor({3.5, 1.0}, torch::kDouble)}, {"count", 7}})},
                  {"scores", torch::arange(12, torch::kFloat).reshape({3, 4})},
                  {"labels", torch::tensor({1, 0, 2}, torch::kLong)},
                  {"none", Tree()},
                  {"list", Tree::list({Tree(2.25), Tree(std::string("text")), torch::ones({0, 5})})}});
  const Tree back = dist::tree_from_bytes(dist::tree_to_bytes(tree));
  CHECK(back.keys() == tree.keys());
  CHECK(back.get("acc.total").tensor().equal(torch::tensor({3.5, 1.0}, torch::kDouble)));
  CHECK(back.get("acc.count").to_int() == 7);
  CHECK(back.get("scores").tensor().equal(torch::arange(12, torch::kFloat).reshape({3, 4})));
  CHECK(back.get("labels").tensor().dtype() == torch::kLong);
  CHECK(back.get("none").is_none());
  CHECK(back.get("list[0]").to_double() == 2.25);
  CHECK(back.get("list[1]").str() == "text");
  CHECK(back.get("list[2]").tensor().sizes() == torch::IntArrayRef({0, 5}));
  CHECK_THROWS_AS(dist::tree_from_bytes(dist::tree_to_bytes(tree).substr(0, 40)), kd::CorruptionError);
}

TEST_CASE("all-reduce, broadcast and all-gather between two ranks") {
  on_ranks(2, [](dist::ProcessGroup& group) {
    const int r = group.rank();
    CHECK(group.size() == 2);
    CHECK(group.backend() == "gloo");
    std::vector<torch::Tensor> sums{torch::full({3}, r + 1.0f), torch::full({2, 2}, 10 * (r + 1), torch::kLong)};
    group.all_reduce_sum(sums, "test sum");
    CHECK(sums[0].equal(torch::full({3}, 3.0f)));
    CHECK(sums[1].equal(torch::full({2, 2}, 30, torch::kLong)));

    std::vector<torch::Tensor> b{torch::full({4}, static_cast<float>(r))};
    group.broadcast(b, 1, "test broadcast");
    CHECK(b[0].equal(torch::full({4}, 1.0f)));

    // Lengths differ between ranks.
    const auto gathered =
        group.all_gather_bytes(std::string(static_cast<std::size_t>(5 + 1000 * r), 'a' + r), "test gather");
    REQUIRE(gathered.size() == 2);
    CHECK(gathered[0] == std::string(5, 'a'));
    CHECK(gathered[1] == std::string(1005, 'b'));

    const auto trees = dist::all_gather_trees(group, Tree::dict({{"rank", torch::tensor({r})}}), "test trees");
    CHECK(trees[1].get("rank").tensor().item<int64_t>() == 1);
    group.barrier("test barrier");
  });
}

TEST_CASE("the gradient reducer averages every gradient over the ranks, in buckets, with the flags") {
  on_ranks(2, [](dist::ProcessGroup& group) {
    const int r = group.rank();
    // Three parameters; a 64-byte bucket limit makes several buckets. `c` has no gradient on rank 0.
    auto a = torch::zeros({4, 4}).requires_grad_(true);
    auto b = torch::zeros({3}).requires_grad_(true);
    auto c = torch::zeros({2}).requires_grad_(true);
    auto frozen = torch::zeros({2});
    a.mutable_grad() = torch::full({4, 4}, 2.0f * (r + 1));                  // 2 and 4: mean 3
    b.mutable_grad() = torch::arange(3, torch::kFloat) * (r == 0 ? 1 : -1);  // mean 0
    if (r == 1) c.mutable_grad() = torch::full({2}, 8.0f);                   // mean (0 + 8) / 2
    auto shared_group = std::shared_ptr<dist::ProcessGroup>(&group, [](dist::ProcessGroup*) {});
    dist::GradientReducer reducer(shared_group, {a, b, c, frozen}, /*bucket_bytes=*/64);
    CHECK(reducer.num_elements() == 16 + 3 + 2);
    CHECK(reducer.num_buckets() == 2);  // a fills one bucket; b and c share the next
    const auto flags = reducer.reduce({r == 1 ? 1.0 : 0.0, 1.0});
    CHECK(flags == std::vector<double>{1.0, 2.0});
    CHECK(a.grad().equal(torch::full({4, 4}, 3.0f)));
    CHECK(b.grad().equal(torch::zeros({3})));
    REQUIRE(c.grad().defined());
    CHECK(c.grad().equal(torch::full({2}, 4.0f)));
    CHECK(!frozen.grad().defined());
  });
}

TEST_CASE("a rank that never joins makes the others fail after the timeout, naming the rendezvous") {
  const int port = kd::distributed::free_port();
  dist::WorldInfo world;
  world.rank = 0;
  world.world_size = 2;
  world.master_port = port;
  dist::Options options;
  options.timeout = std::chrono::milliseconds(1500);
  CHECK_THROWS_AS(dist::ProcessGroup::create(world, options, c10::Device(c10::kCPU)), kd::DistributedError);
  world.rank = 1;  // a client whose server (rank 0) is not there
  CHECK_THROWS_WITH(dist::ProcessGroup::create(world, options, c10::Device(c10::kCPU)),
                    Catch::Contains("rank 1 of 2: the rendezvous at 127.0.0.1:" + std::to_string(port)) &&
                        Catch::Contains("MASTER_ADDR, MASTER_PORT and WORLD_SIZE"));
}
