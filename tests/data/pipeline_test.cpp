#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <torch/torch.h>
#include <zlib.h>

#include "trainer/common/error.h"
#include "trainer/data/idx.h"
#include "trainer/data/pipeline.h"

using kd::Tree;
using kd::config::Node;
using kd::data::Pipeline;
using kd::data::PipelineOptions;

namespace {

// 10 examples whose "id" is their index.
kd::data::SourcePtr ids(int64_t n = 10) {
  return kd::data::in_memory_source(
      Tree::dict({{"id", torch::arange(n)}, {"x", torch::arange(n).to(torch::kFloat) * 2}}));
}

std::vector<int64_t> ids_of(const Tree& batch) {
  const torch::Tensor t = batch.get("id").tensor();
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

std::vector<std::vector<int64_t>> take(Pipeline& p, int n) {
  std::vector<std::vector<int64_t>> out;
  for (int i = 0; i < n; ++i) {
    auto b = p.next();
    if (!b) break;
    out.push_back(ids_of(*b));
  }
  return out;
}

PipelineOptions options(int64_t batch, bool shuffle, int64_t epochs, bool drop, int64_t seed = 0,
                        int64_t prefetch = 2) {
  PipelineOptions o;
  o.batch_size = batch;
  o.shuffle = shuffle;
  o.num_epochs = epochs;
  o.drop_remainder = drop;
  o.seed = seed;
  o.prefetch = prefetch;
  return o;
}

}  // namespace

TEST_CASE("without shuffling, batches follow the data and the last one may be smaller") {
  Pipeline p(ids(), {}, options(4, false, 1, false));
  CHECK(take(p, 10) == std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}});
  CHECK_FALSE(p.next().has_value());
  CHECK_FALSE(p.next().has_value());
}

TEST_CASE("drop_remainder drops the last partial batch of every epoch") {
  Pipeline p(ids(), {}, options(4, false, 2, true));
  CHECK(take(p, 10) == std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}, {0, 1, 2, 3}, {4, 5, 6, 7}});
}

TEST_CASE("shuffling gives every example once per epoch in a new order each epoch") {
  Pipeline p(ids(), {}, options(5, true, 2, true, 42));
  const auto batches = take(p, 4);
  std::vector<int64_t> epoch0 = batches[0], epoch1 = batches[2];
  epoch0.insert(epoch0.end(), batches[1].begin(), batches[1].end());
  epoch1.insert(epoch1.end(), batches[3].begin(), batches[3].end());
  CHECK(epoch0 != epoch1);
  std::sort(epoch0.begin(), epoch0.end());
  std::sort(epoch1.begin(), epoch1.end());
  CHECK(epoch0 == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(epoch1 == epoch0);
}

TEST_CASE("the same seed gives the same stream, another seed another one") {
  Pipeline a(ids(100), {}, options(10, true, 0, true, 1));
  Pipeline b(ids(100), {}, options(10, true, 0, true, 1, /*prefetch=*/0));
  Pipeline c(ids(100), {}, options(10, true, 0, true, 2));
  const auto sa = take(a, 25), sb = take(b, 25), sc = take(c, 25);
  CHECK(sa == sb);
  CHECK(sa != sc);
}

TEST_CASE("restoring a saved iterator state continues exactly the same stream") {
  Pipeline full(ids(30), {}, options(4, true, 0, true, 9));
  const auto expected = take(full, 20);
  Pipeline first(ids(30), {}, options(4, true, 0, true, 9));
  take(first, 11);
  const auto state = first.state();
  CHECK(state == kd::data::PipelineState{1, 4});  // 7 batches per epoch
  Pipeline resumed(ids(30), {}, options(4, true, 0, true, 9));
  resumed.restore(state);
  const auto rest = take(resumed, 9);
  CHECK(rest == std::vector<std::vector<int64_t>>(expected.begin() + 11, expected.end()));
}

TEST_CASE("switching prefetching on or off mid-stream changes nothing in the stream") {
  Pipeline full(ids(30), {}, options(4, true, 0, true, 9));
  const auto expected = take(full, 20);
  Pipeline switched(ids(30), {}, options(4, true, 0, true, 9));
  auto got = take(switched, 5);
  switched.set_prefetch(0);  // the worker had made batches ahead: they are not skipped
  for (const auto& b : take(switched, 6)) got.push_back(b);
  switched.set_prefetch(3);
  for (const auto& b : take(switched, 9)) got.push_back(b);
  CHECK(got == expected);
  CHECK_THROWS_AS(switched.set_prefetch(-1), kd::Error);
}

namespace {

// Counts the batches made (each goes through apply once) and, when given the batches the test
// has asked for (`taken`, counted before each next()) and a bound, each batch begun beyond
// `taken + ahead` (`over`).
class CountingTransform : public kd::data::Transform {
 public:
  explicit CountingTransform(std::shared_ptr<std::atomic<int>> made, std::shared_ptr<std::atomic<int>> taken = nullptr,
                             int ahead = 0, std::shared_ptr<std::atomic<int>> over = nullptr)
      : made_(std::move(made)), taken_(std::move(taken)), ahead_(ahead), over_(std::move(over)) {}
  Tree apply(const Tree& batch, at::Generator&) const override {
    const int number = ++*made_;
    if (taken_ && number > taken_->load() + ahead_) ++*over_;
    return batch;
  }

 private:
  std::shared_ptr<std::atomic<int>> made_, taken_;
  int ahead_ = 0;
  std::shared_ptr<std::atomic<int>> over_;
};

// Waits (up to 20 s) until `made` reaches `n`; returns its value then.
int wait_for(const std::atomic<int>& made, int n) {
  for (int i = 0; i < 2000 && made.load() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return made.load();
}

}  // namespace

TEST_CASE("the worker makes `prefetch` batches ahead of the one in use, counting the one it is making, and no more") {
  for (const int64_t prefetch : {1, 2, 5}) {
    INFO("prefetch " << prefetch);
    auto made = std::make_shared<std::atomic<int>>(0), taken = std::make_shared<std::atomic<int>>(0),
         over = std::make_shared<std::atomic<int>>(0);
    {
      Pipeline p(ids(100), {std::make_shared<CountingTransform>(made, taken, static_cast<int>(prefetch), over)},
                 options(2, false, 0, true, 0, prefetch));
      CHECK(wait_for(*made, static_cast<int>(prefetch)) == prefetch);
      for (int i = 1; i <= 3; ++i) {
        ++*taken;  // before next(): from here the worker may begin batch taken + prefetch
        REQUIRE(p.next().has_value());
        CHECK(wait_for(*made, static_cast<int>(i + prefetch)) == i + prefetch);
      }
    }  // the worker stopped and joined
    // Every batch the worker began, it began within the bound (each batch held ahead costs its
    // memory): checked as each was begun, not after a pause.
    CHECK(over->load() == 0);
    CHECK(made->load() >= 3 + prefetch);
  }
}

TEST_CASE("random transforms depend only on the batch position, so they resume too") {
  auto flip = kd::data::transform_registry().create(Node::parse("{type: RandomFlip, key: x}"));
  auto data = kd::data::in_memory_source(Tree::dict({{"x", torch::rand({40, 2, 3})}}));
  Pipeline a(data, {flip}, options(8, true, 0, true, 5));
  std::vector<torch::Tensor> stream;
  for (int i = 0; i < 6; ++i) stream.push_back(a.next()->get("x").tensor());
  Pipeline b(data, {flip}, options(8, true, 0, true, 5));
  b.restore({1, 0});
  CHECK(b.next()->get("x").tensor().equal(stream[5]));
}

TEST_CASE("a pipeline from YAML reads its source, options and transforms") {
  Pipeline p(Node::parse("{type: Synthetic, num_examples: 50, num_features: 3, batch_size: 16, shuffle: false, "
                         "transforms: [{type: Elements, keep: [image]}]}"),
             0);
  const Tree batch = *p.next();
  CHECK(batch.keys() == std::vector<std::string>{"image"});
  CHECK(batch.get("image").tensor().sizes() == torch::IntArrayRef({16, 3}));
  CHECK(p.batches_per_epoch() == 3);
  CHECK_THROWS_WITH(Pipeline(Node::parse("{type: Synthetic, batch_size: 16, shufle: false}"), 0),
                    Catch::Contains("unknown key \"shufle\". Did you mean \"shuffle\"?"));
  CHECK_THROWS_WITH(Pipeline(Node::parse("{type: Synthetic, num_examples: 4, batch_size: 16}"), 0),
                    Catch::Contains("no batch to make"));
  // prefetch: a number of batches, or auto (the owner's default: the Trainer's choice, or an eval's).
  PipelineOptions owner;
  owner.prefetch = 3;
  CHECK(Pipeline(Node::parse("{type: Synthetic, batch_size: 16, prefetch: auto}"), 0, owner).options().prefetch == 3);
  CHECK(Pipeline(Node::parse("{type: Synthetic, batch_size: 16}"), 0, owner).options().prefetch == 3);
  CHECK(Pipeline(Node::parse("{type: Synthetic, batch_size: 16, prefetch: 0}"), 0, owner).options().prefetch == 0);
  CHECK_THROWS_WITH(Pipeline(Node::parse("{type: Synthetic, batch_size: 16, prefetch: soon}", "d.yaml"), 0),
                    Catch::StartsWith("d.yaml:1:") && Catch::Contains("(prefetch is auto or a number of batches)"));
}

TEST_CASE("IDX files are read gzipped or plain, and damaged ones are reported") {
  const auto dir = std::filesystem::temp_directory_path() / "kd_idx_test";
  std::filesystem::create_directories(dir);
  const unsigned char header[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3};
  const unsigned char values[] = {1, 2, 3, 4, 5, 6};
  {
    std::ofstream plain(dir / "plain", std::ios::binary);
    plain.write(reinterpret_cast<const char*>(header), sizeof(header));
    plain.write(reinterpret_cast<const char*>(values), sizeof(values));
  }
  gzFile gz = gzopen((dir / "packed.gz").c_str(), "wb");
  gzwrite(gz, header, sizeof(header));
  gzwrite(gz, values, sizeof(values));
  gzclose(gz);
  const torch::Tensor expected = torch::tensor({1, 2, 3, 4, 5, 6}, torch::kByte).reshape({2, 3});
  CHECK(kd::data::read_idx((dir / "plain").string()).equal(expected));
  CHECK(kd::data::read_idx((dir / "packed.gz").string()).equal(expected));
  {
    std::ofstream truncated(dir / "truncated", std::ios::binary);
    truncated.write(reinterpret_cast<const char*>(header), sizeof(header));
    truncated.write(reinterpret_cast<const char*>(values), 4);
  }
  CHECK_THROWS_WITH(kd::data::read_idx((dir / "truncated").string()), Catch::Contains("truncated download"));
  CHECK_THROWS_AS(kd::data::read_idx((dir / "missing").string()), kd::IOError);
  {
    // Found by fuzzing: three dimensions of 0xa40000 overflowed the count (undefined behaviour).
    const unsigned char huge[] = {0, 0, 8, 3, 0, 0, 0, 2, 0xa4, 0, 0, 2, 0xa4, 0, 0, 2, 0, 0, 0, 2, 0, 1, 2, 3};
    std::ofstream(dir / "huge", std::ios::binary).write(reinterpret_cast<const char*>(huge), sizeof(huge));
  }
  CHECK_THROWS_WITH(kd::data::read_idx((dir / "huge").string()), Catch::Contains("multiply past 4 GiB"));
  {
    // Found by fuzzing: a dimension of 0 copied from a null pointer.
    const unsigned char empty[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0xfa, 7};
    std::ofstream(dir / "empty", std::ios::binary).write(reinterpret_cast<const char*>(empty), sizeof(empty));
  }
  CHECK(kd::data::read_idx((dir / "empty").string()).sizes() == torch::IntArrayRef({2, 0, 129543}));
  std::filesystem::remove_all(dir);
}

TEST_CASE("Fashion-MNIST loads from the Debian dataset with its known shapes and labels") {
  Pipeline p(Node::parse("{type: FashionMnist, split: test, num_examples: 100, batch_size: 100, shuffle: false}"), 0);
  const Tree batch = *p.next();
  CHECK(batch.get("image").tensor().sizes() == torch::IntArrayRef({100, 28, 28}));
  CHECK(batch.get("image").tensor().scalar_type() == torch::kByte);
  CHECK(batch.get("label").tensor().min().item<int64_t>() == 0);
  CHECK(batch.get("label").tensor().max().item<int64_t>() == 9);
  CHECK(batch.get("label").tensor()[0].item<int64_t>() == 9);  // the first test image is an ankle boot
}

TEST_CASE("the shards of a pipeline read disjoint slices that together make each global batch") {
  // 10 examples, batches of 4 (the last one of 2 when not dropped), in 3 shards: slices of 1, 1, 2.
  for (bool drop : {true, false}) {
    Pipeline whole(ids(), {}, options(4, /*shuffle=*/true, /*epochs=*/2, drop, /*seed=*/7));
    std::vector<std::unique_ptr<Pipeline>> shards;
    for (int64_t i = 0; i < 3; ++i) {
      PipelineOptions o = options(4, true, 2, drop, 7);
      o.num_shards = 3;
      o.shard_index = i;
      shards.push_back(std::make_unique<Pipeline>(ids(), std::vector<kd::data::TransformPtr>{}, o));
    }
    int batches = 0;
    while (auto batch = whole.next()) {
      std::vector<int64_t> joined;
      std::vector<int64_t> sizes;
      for (auto& shard : shards) {
        auto part = shard->next();
        REQUIRE(part);
        const auto got = ids_of(*part);
        sizes.push_back(static_cast<int64_t>(got.size()));
        joined.insert(joined.end(), got.begin(), got.end());
      }
      INFO("drop_remainder " << drop << ", batch " << batches);
      CHECK(joined == ids_of(*batch));
      CHECK(sizes == (ids_of(*batch).size() == 4 ? std::vector<int64_t>{1, 1, 2} : std::vector<int64_t>{0, 1, 1}));
      CHECK(shards[0]->state() == whole.state());  // positions are global
      ++batches;
    }
    CHECK(batches == (drop ? 4 : 6));
    for (auto& shard : shards) CHECK(!shard->next());
  }
}

TEST_CASE("a transform that fails with any exception is named, with the batch's shapes, as kd's error") {
  struct Throws : kd::data::Transform {
    Tree apply(const Tree&, at::Generator&) const override { throw std::runtime_error("cannot reshape"); }
  };
  Pipeline p(ids(10), {std::make_shared<Throws>()}, options(2, false, 0, true, 0, 0));
  CHECK_THROWS_MATCHES(p.next(), kd::TypeError, Catch::Matchers::Predicate<kd::TypeError>([](const kd::TypeError& e) {
                         const std::string what = e.what();
                         return what.find("transforms[0]") != std::string::npos &&
                                what.find("failed on the batch {") != std::string::npos &&
                                what.find("cannot reshape") != std::string::npos;
                       }));
}
