// Batches made by any number of worker threads, from in-memory and random-access sources, are
// the same batches in the same order, and resume exactly.
#include <catch2/catch.hpp>

#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/data/pipeline.h"

using kd::Tree;
using kd::config::Node;
using kd::data::Pipeline;
using kd::data::PipelineOptions;

namespace {

// Example i: a 3x4 picture of value i and the label i % 3, read one at a time; example
// `broken` throws as an unreadable file would.
class CountingSource : public kd::data::Source {
 public:
  explicit CountingSource(int64_t n, int64_t broken = -1) : n_(n), broken_(broken) {}
  bool random_access() const override { return true; }
  int64_t size() const override { return n_; }
  Tree get(int64_t i) const override {
    if (i == broken_) throw kd::IOError("cannot read picture " + std::to_string(i));
    return Tree::dict({{"image", torch::full({3, 4, 1}, static_cast<float>(i))},
                       {"label", torch::scalar_tensor(i % 3, torch::kLong)}});
  }
  std::string describe() const override { return "CountingSource"; }

 private:
  int64_t n_, broken_;
};

std::vector<kd::data::TransformPtr> flip_and_noise() {
  return {
      kd::data::transform_registry().create(Node::parse("{type: RandomFlip, key: image}")),
      kd::data::transform_registry().create(Node::parse("{type: RandomCrop, key: image, size: [3, 4], padding: 1}"))};
}

std::vector<torch::Tensor> images(Pipeline& p, int n) {
  std::vector<torch::Tensor> out;
  for (int i = 0; i < n; ++i) out.push_back(p.next()->get("image").tensor());
  return out;
}

Pipeline counting(int64_t workers, int64_t prefetch, int64_t n = 23, int64_t broken = -1, bool skip = false) {
  PipelineOptions o;
  o.skip_unreadable = skip;
  o.batch_size = 4;
  o.num_workers = workers;
  o.prefetch = prefetch;
  o.seed = 11;
  return Pipeline(std::make_shared<CountingSource>(n, broken), flip_and_noise(), o);
}

}  // namespace

TEST_CASE("batches of a random-access source are the same for 0, 1 and 4 workers and any prefetch") {
  Pipeline inline_p = counting(1, 0);
  const auto expected = images(inline_p, 14);  // into the third epoch (5 batches per epoch)
  for (const auto& [workers, prefetch] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 3}, {4, 2}, {4, 8}}) {
    INFO(workers << " workers, prefetch " << prefetch);
    Pipeline p = counting(workers, prefetch);
    CHECK(p.num_workers() == workers);
    const auto got = images(p, 14);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].equal(expected[i]));
  }
  // Every example once per epoch, shuffled: the pixel values of epoch 0's 20 examples (the
  // random crops move them, so take each image's largest value).
  std::set<int64_t> seen;
  for (int b = 0; b < 5; ++b) {
    for (int64_t k = 0; k < 4; ++k) seen.insert(static_cast<int64_t>(expected[b][k].max().item<float>()));
  }
  CHECK(seen.size() == 20);
}

TEST_CASE("a run resumed with another number of workers continues the same stream") {
  Pipeline first = counting(2, 2);
  const auto all = images(first, 9);
  Pipeline stopped = counting(4, 4);
  images(stopped, 6);
  const kd::data::PipelineState at = stopped.state();
  Pipeline resumed = counting(1, 1);
  resumed.restore(at);
  const auto rest = images(resumed, 3);
  for (int i = 0; i < 3; ++i) CHECK(rest[i].equal(all[6 + i]));
}

TEST_CASE("an example that cannot be read is an error naming it, raised at its batch, whatever the workers") {
  for (const int64_t workers : {1, 3}) {
    Pipeline p = counting(workers, 4, 23, /*broken=*/5);
    bool raised = false;
    for (int b = 0; b < 6 && !raised; ++b) {
      try {
        p.next();
      } catch (const kd::IOError& e) {
        raised = true;
        CHECK_THAT(e.what(), Catch::Contains("cannot read picture 5") && Catch::Contains("example 5"));
        // The same error again: the stream does not skip past it.
        CHECK_THROWS_AS(p.next(), kd::IOError);
      }
    }
    CHECK(raised);
  }
}

TEST_CASE("in-memory sources: the same batches for 1 and 4 workers") {
  PipelineOptions o;
  o.batch_size = 3;
  o.seed = 5;
  const Tree data = Tree::dict({{"x", torch::arange(40).to(torch::kFloat)}});
  std::vector<std::vector<torch::Tensor>> streams;
  for (const int64_t workers : {1, 4}) {
    o.num_workers = workers;
    o.prefetch = workers == 1 ? 0 : 6;
    Pipeline p(kd::data::in_memory_source(data), {}, o);
    std::vector<torch::Tensor> s;
    for (int i = 0; i < 30; ++i) s.push_back(p.next()->get("x").tensor());
    streams.push_back(s);
  }
  for (std::size_t i = 0; i < streams[0].size(); ++i) CHECK(streams[0][i].equal(streams[1][i]));
}

TEST_CASE("on_error: skip leaves an unreadable example out of its batch and names it once it is delivered") {
  std::vector<std::vector<torch::Tensor>> streams;
  for (const int64_t workers : {1, 3}) {
    Pipeline p = counting(workers, workers == 1 ? 0 : 4, 23, /*broken=*/5, /*skip=*/true);
    std::vector<torch::Tensor> labels;
    std::vector<std::string> skipped;
    for (int b = 0; b < 10; ++b) {  // two epochs
      labels.push_back(p.next()->get("label").tensor());
      for (auto& s : p.take_skipped()) skipped.push_back(s);
    }
    int64_t examples = 0;
    for (const auto& l : labels) examples += l.size(0);
    CHECK(examples == 2 * 20 - 2);  // example 5 is in each epoch's 20 once
    REQUIRE(skipped.size() == 2);
    CHECK_THAT(skipped[0], Catch::StartsWith("example 5: cannot read picture 5"));
    CHECK(p.take_skipped().empty());
    streams.push_back(labels);
  }
  for (std::size_t i = 0; i < streams[0].size(); ++i) CHECK(streams[0][i].equal(streams[1][i]));
}

TEST_CASE("on_error is raise or skip") {
  CHECK_THROWS_WITH(Pipeline(Node::parse("{type: Synthetic, batch_size: 4, on_error: ignore}", "e.yaml"), 0),
                    Catch::Contains("e.yaml:1:") && Catch::Contains("on_error must be raise or skip"));
}

TEST_CASE("a transform run on the stacked examples that fails names the example it fails on") {
  PipelineOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.num_workers = 1;
  o.prefetch = 0;
  // Labels are i % 3: example 2 of the first batch has a class OneHot does not know.
  Pipeline p(std::make_shared<CountingSource>(8),
             {kd::data::transform_registry().create(Node::parse("{type: OneHot, key: label, num_classes: 2}"))}, o);
  CHECK_THROWS_WITH(p.next(), Catch::Contains("transforms[0] of CountingSource failed on example 2 {"));
}
