#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "tests/io/forwarding_file_system.h"
#include "tests/step/test_helpers.h"
#include "tests/temp_dir.h"
#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/export.h"
#include "trainer/checkpoints/safetensors.h"
#include "trainer/common/error.h"

namespace fs = std::filesystem;
using kd::Tree;
using kd::checkpoints::Checkpointer;
using kd::checkpoints::CheckpointerOptions;
using kd::checkpoints::Snapshot;

namespace {

using kd::testing::fresh_dir;

struct Net : torch::nn::Module {
  Net() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
    bn = register_module("bn", torch::nn::BatchNorm1d(2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return bn(fc(x)); }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};

// A module and optimizer with state after a few steps.
struct Trained {
  std::shared_ptr<Net> net = std::make_shared<Net>();
  torch::optim::Adam adam{net->parameters(), torch::optim::AdamOptions(0.1)};
  explicit Trained(int steps) {
    for (int i = 0; i < steps; ++i) {
      adam.zero_grad();
      net->forward(torch::randn({4, 3})).pow(2).mean().backward();
      adam.step();
    }
  }
};

Snapshot snapshot_of(Trained& t, int64_t step) {
  Snapshot s;
  s.step = step;
  s.model = t.net.get();
  s.optimizer = &t.adam;
  s.data = {2, 7};
  s.aux = Tree::dict({{"loss", Tree::dict({{"total", torch::tensor(1.5)}, {"count", int64_t{3}}})}, {"name", "x"}});
  s.aux_steps = 3;
  s.config_yaml = "seed: 0\n";
  return s;
}

// One more optimizer step of both on the same batch.
void step_both(Trained& a, Trained& b) {
  const torch::Tensor x = torch::randn({4, 3});
  for (Trained* t : {&a, &b}) {
    t->adam.zero_grad();
    t->net->forward(x).pow(2).mean().backward();
    t->adam.step();
  }
}

// A snapshot to restore into `t`'s model and optimizer.
Snapshot target_of(Trained& t) {
  Snapshot s;
  s.model = t.net.get();
  s.optimizer = &t.adam;
  return s;
}

bool same_tensors(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  const auto ba = a.named_buffers(), bb = b.named_buffers();
  for (std::size_t i = 0; i < pa.size(); ++i) {
    if (!pa[i].value().equal(pb[i].value())) return false;
  }
  for (std::size_t i = 0; i < ba.size(); ++i) {
    if (!ba[i].value().equal(bb[i].value())) return false;
  }
  return true;
}

// A file system that fails the n-th write (counting from 1), like a disk that fills up.
class FailingFileSystem : public kd::testing::ForwardingFileSystem {
 public:
  explicit FailingFileSystem(int fail_at) : fail_at_(fail_at) {}
  void write_file(const std::string& path, std::string_view data) override {
    if (++writes_ == fail_at_) {
      base_->write_file(path, data.substr(0, data.size() / 2));  // a partial write, then the error
      throw kd::IOError("writing \"" + path + "\" failed: No space left on device");
    }
    base_->write_file(path, data);
  }

 private:
  int fail_at_;
  int writes_ = 0;
};

}  // namespace

TEST_CASE("a checkpoint round-trips params, buffers, optimizer state, data position, aux states and RNG") {
  const fs::path dir = fresh_dir();
  torch::manual_seed(0);
  Trained source(3);
  Checkpointer ckpt(dir.string(), CheckpointerOptions{});
  torch::manual_seed(123);
  const std::string path = ckpt.save(snapshot_of(source, 3));
  CHECK(path == (dir / "ckpt_3").string());
  const torch::Tensor next_random = torch::rand({5});

  torch::manual_seed(99);
  Trained target(0);
  Snapshot restored = target_of(target);
  ckpt.restore(path, restored);
  CHECK(same_tensors(*source.net, *target.net));
  CHECK(torch::rand({5}).equal(next_random));  // the generator continues where it was saved
  CHECK(restored.step == 3);
  CHECK(restored.data == kd::data::PipelineState{2, 7});
  CHECK(restored.aux.get("loss.total").tensor().item<double>() == 1.5);
  CHECK(restored.aux.get("loss.count").to_int() == 3);
  CHECK(restored.aux.get("name").str() == "x");
  CHECK(restored.aux_steps == 3);
  CHECK(restored.config_yaml == "seed: 0\n");
  // The optimizer continues identically: one more step on both gives the same parameters.
  step_both(source, target);
  CHECK(same_tensors(*source.net, *target.net));
  fs::remove_all(dir);
}

// Counts the reads of each file.
class CountingReads : public kd::testing::ForwardingFileSystem {
 public:
  std::string read_file(const std::string& path) override {
    ++reads[fs::path(path).filename().string()];
    return ForwardingFileSystem::read_file(path);
  }
  std::map<std::string, int> reads;
};

TEST_CASE("a restore reads each file once and keeps no more of it than the state it restores") {
  const fs::path dir = fresh_dir();
  torch::manual_seed(0);
  Trained source(3);
  const std::string path = Checkpointer(dir.string(), CheckpointerOptions{}).save(snapshot_of(source, 3));

  auto counting = std::make_shared<CountingReads>();
  Checkpointer ckpt(dir.string(), CheckpointerOptions{}, counting);
  Trained target(1);
  const torch::Tensor old_weight = target.net->fc->weight;
  Snapshot restored = target_of(target);
  ckpt.restore(path, restored);
  CHECK(counting->reads == std::map<std::string, int>{
                               {"MANIFEST.json", 1}, {"state.safetensors", 1}, {"meta.json", 1}, {"config.yaml", 1}});
  CHECK(same_tensors(*source.net, *target.net));
  CHECK(old_weight.equal(source.net->fc->weight));  // the same tensor object holds the restored values
  // What the caller keeps is its own: the interval's states hold their bytes only, not the file.
  const torch::Tensor total = restored.aux.get("loss.total").tensor();
  CHECK(total.storage().nbytes() == total.element_size());
  // Training on changes nothing in the checkpoint, and both continue identically.
  step_both(source, target);
  CHECK(same_tensors(*source.net, *target.net));
  Trained again(1);
  Snapshot second = target_of(again);
  Checkpointer(dir.string(), CheckpointerOptions{}).restore(path, second);
  CHECK(!same_tensors(*again.net, *target.net));  // the checkpoint still holds step 3's values
  fs::remove_all(dir);
}

TEST_CASE("safetensors read from a buffer: views into it where aligned, copies where not, the same values") {
  const torch::Tensor a = torch::arange(6, torch::kFloat).reshape({2, 3});
  const torch::Tensor flag = torch::tensor({true}, torch::kBool);  // 1 byte: what follows is misaligned
  const torch::Tensor b = torch::arange(3, torch::kDouble);
  const std::string file = kd::checkpoints::safetensors_bytes({{"a", a}, {"flag", flag}, {"b", b}});
  const torch::Tensor bytes = torch::empty({static_cast<int64_t>(file.size())}, torch::kByte);
  std::memcpy(bytes.data_ptr(), file.data(), file.size());
  const auto tensors = kd::checkpoints::tensors_from_safetensors(bytes, "test");
  REQUIRE(tensors.size() == 3);
  CHECK(tensors[0].second.equal(a));
  CHECK(tensors[1].second.equal(flag));
  CHECK(tensors[2].second.equal(b));
  CHECK(tensors[0].second.is_alias_of(bytes));   // aligned for float: a view
  CHECK(!tensors[2].second.is_alias_of(bytes));  // a double after 25 bytes of data: copied
  CHECK(kd::checkpoints::tensors_from_safetensors(file, "test")[2].second.equal(b));
}

TEST_CASE("a damaged checkpoint is reported by name and the previous valid one is used") {
  const fs::path dir = fresh_dir();
  torch::manual_seed(0);
  Trained t(1);
  Checkpointer ckpt(dir.string(), CheckpointerOptions{.max_to_keep = 5});
  ckpt.save(snapshot_of(t, 1));
  ckpt.save(snapshot_of(t, 2));
  ckpt.save(snapshot_of(t, 3));
  {  // flip one byte of step 3's tensors
    std::fstream f(dir / "ckpt_3" / "state.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char c;
    f.read(&c, 1);
    f.seekp(100);
    c = static_cast<char>(c ^ 0x5a);
    f.write(&c, 1);
  }
  fs::resize_file(dir / "ckpt_2" / "meta.json", 10);  // truncate step 2
  const auto infos = ckpt.probe();
  REQUIRE(infos.size() == 3);
  CHECK(infos[0].problem == "state.safetensors fails its checksum");
  CHECK_THAT(infos[1].problem, Catch::StartsWith("meta.json has 10 bytes"));
  CHECK(infos[2].valid());
  CHECK(ckpt.latest_valid()->step == 1);
  fs::remove(dir / "ckpt_1" / "MANIFEST.json");
  CHECK(ckpt.probe()[2].problem == "no MANIFEST.json (the save did not finish)");
  CHECK_FALSE(ckpt.latest_valid().has_value());
  Snapshot s;
  s.model = t.net.get();
  CHECK_THROWS_AS(ckpt.restore((dir / "ckpt_3").string(), s), kd::CorruptionError);
  fs::remove_all(dir);
}

TEST_CASE("a failing write leaves every earlier checkpoint intact and no partial one behind") {
  const fs::path dir = fresh_dir();
  torch::manual_seed(0);
  Trained t(1);
  for (int fail_at = 1; fail_at <= 4; ++fail_at) {
    fs::remove_all(dir);
    Checkpointer good(dir.string(), CheckpointerOptions{.max_to_keep = 1});
    good.save(snapshot_of(t, 1));
    Checkpointer failing(dir.string(), CheckpointerOptions{.max_to_keep = 1},
                         std::make_shared<FailingFileSystem>(fail_at));
    INFO("failing write " << fail_at);
    CHECK_THROWS_WITH(failing.save(snapshot_of(t, 2)),
                      Catch::Contains("No space left on device") && Catch::Contains("earlier checkpoints are intact"));
    const auto infos = good.probe();
    REQUIRE(infos.size() == 1);
    CHECK(infos[0].step == 1);
    CHECK(infos[0].valid());
    CHECK(kd::io::posix_file_system()->list(dir.string()).size() == 1);  // no temporary directory left
  }
  fs::remove_all(dir);
}

TEST_CASE("pruning keeps the newest, every keep_period-th and the best checkpoint") {
  const fs::path dir = fresh_dir();
  torch::manual_seed(0);
  Trained t(1);
  Checkpointer ckpt(dir.string(), CheckpointerOptions{
                                      .max_to_keep = 2, .keep_period = 4, .best_metric_path = "test/metrics/accuracy"});
  for (int64_t step = 1; step <= 9; ++step) {
    ckpt.save(snapshot_of(t, step));
    if (step == 3) {
      CHECK(ckpt.track_best(step, "test", {{"metrics/accuracy", 0.9}}));
      ckpt.write_best();
    }
    if (step == 5) CHECK_FALSE(ckpt.track_best(step, "test", {{"metrics/accuracy", 0.8}}));
  }
  std::vector<int64_t> kept;
  for (const auto& info : ckpt.probe()) kept.push_back(info.step);
  CHECK(kept == std::vector<int64_t>{9, 8, 4, 3});
  // The best step survives a restart of the checkpointer.
  Checkpointer again(dir.string(), CheckpointerOptions{.max_to_keep = 2, .best_metric_path = "test/metrics/accuracy"});
  CHECK(again.best_step() == 3);
  fs::remove_all(dir);
}

TEST_CASE("restoring into a different model names the mismatch") {
  const fs::path dir = fresh_dir();
  torch::manual_seed(0);
  Trained t(1);
  Checkpointer ckpt(dir.string(), CheckpointerOptions{});
  const std::string path = ckpt.save(snapshot_of(t, 1));
  torch::nn::Linear other(3, 5);
  Snapshot s;
  s.model = other.get();
  CHECK_THROWS_WITH(ckpt.restore(path, s), Catch::Contains("params") && Catch::Contains("do not match the model"));
  // An intact checkpoint of another model: a mismatch (nothing older is tried), not damage.
  CHECK_THROWS_AS(ckpt.restore(path, s), kd::MismatchError);
  fs::remove_all(dir);
}

TEST_CASE("a checkpoint pruned while a reader reads it is not damaged: the reader lists again and takes the newest") {
  using kd::checkpoints::CheckpointInfo;
  const fs::path dir = fresh_dir();
  torch::manual_seed(0);
  Trained t(1);
  Checkpointer run(dir.string(), CheckpointerOptions{.max_to_keep = 1});
  run.save(snapshot_of(t, 10));
  Checkpointer reader(dir.string(), CheckpointerOptions{});
  std::vector<std::string> used, skipped;
  const auto skip = [&](const CheckpointInfo& info, const std::string& why) { skipped.push_back(info.path); };
  // While the reader reads step 10, the run saves step 20 and prunes 10 (max_to_keep 1).
  const auto read = [&](const CheckpointInfo& info) {
    used.push_back(std::to_string(info.step));
    if (info.step == 10) {
      run.save(snapshot_of(t, 20));
      kd::checkpoints::read_checkpoint_tensors(info.path, "params");  // gone: this read fails
    }
  };
  const auto chosen = reader.choose(std::nullopt, read, skip);
  REQUIRE(chosen);
  CHECK(chosen->step == 20);
  CHECK(used == std::vector<std::string>{"10", "20"});
  CHECK(skipped.empty());  // never reported as damaged
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  CHECK(names == std::vector<std::string>{"ckpt_20"});  // nothing set aside, nothing left behind

  // The step asked for, pruned meanwhile: said as such.
  const auto prune_while_read = [&](const CheckpointInfo& info) {
    run.save(snapshot_of(t, info.step + 10));
    kd::checkpoints::read_checkpoint_tensors(info.path, "params");
  };
  CHECK_THROWS_WITH(reader.choose(20, prune_while_read, skip),
                    Catch::Contains("ckpt_20\" was deleted while it was read") && Catch::Contains("max_to_keep"));
  // A damaged one is still reported, and the one before it used.
  run.save(snapshot_of(t, 40));
  Checkpointer keep_two(dir.string(), CheckpointerOptions{.max_to_keep = 2});
  keep_two.save(snapshot_of(t, 50));
  std::ofstream(dir / "ckpt_50" / "meta.json", std::ios::app) << " ";
  skipped.clear();
  const auto newest = reader.choose(
      std::nullopt, [](const CheckpointInfo&) {}, skip);
  REQUIRE(newest);
  CHECK(newest->step == 40);
  CHECK(skipped == std::vector<std::string>{(dir / "ckpt_50").string()});
  fs::remove_all(dir);
}

TEST_CASE("a safetensors file whose tensors overlap, leave a gap or leave bytes over is refused") {
  // Two float32 tensors of 2 elements (8 bytes each) over `data_size` bytes of data.
  const auto file = [](uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1, std::size_t data_size) {
    std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[)" + std::to_string(a0) + "," +
                         std::to_string(a1) + R"(]},"b":{"dtype":"F32","shape":[2],"data_offsets":[)" +
                         std::to_string(b0) + "," + std::to_string(b1) + "]}}";
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return out + header + std::string(data_size, '\0');
  };
  using kd::checkpoints::tensors_from_safetensors;
  CHECK(tensors_from_safetensors(file(0, 8, 8, 16, 16), "ok").size() == 2);
  CHECK(tensors_from_safetensors(file(8, 16, 0, 8, 16), "ok").size() == 2);  // any order of the entries
  CHECK_THROWS_WITH(tensors_from_safetensors(file(0, 8, 4, 12, 16), "f"), Catch::Contains("it overlaps another"));
  CHECK_THROWS_WITH(tensors_from_safetensors(file(0, 8, 12, 20, 20), "f"), Catch::Contains("a gap"));
  CHECK_THROWS_WITH(tensors_from_safetensors(file(0, 8, 8, 16, 24), "f"),
                    Catch::Contains("8 bytes of data after the last tensor"));
}

TEST_CASE("safetensors export is readable by an independent parse of the format") {
  const torch::Tensor a = torch::arange(6, torch::kFloat).reshape({2, 3});
  const torch::Tensor b = torch::tensor({7, 8}, torch::kLong);
  const std::string bytes = kd::checkpoints::safetensors_bytes({{"params.a", a}, {"params.b", b}}, {{"step", "5"}});
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  CHECK((8 + n) % 8 == 0);
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  CHECK(header["__metadata__"]["step"] == "5");
  CHECK(header["params.a"]["dtype"] == "F32");
  CHECK(header["params.a"]["shape"] == nlohmann::json::array({2, 3}));
  const auto offsets = header["params.b"]["data_offsets"];
  CHECK(header["params.b"]["dtype"] == "I64");
  const std::string data = bytes.substr(8 + n);
  CHECK(data.size() == 6 * 4 + 2 * 8);
  int64_t eight;
  std::memcpy(&eight, data.data() + offsets[0].get<std::size_t>() + 8, 8);
  CHECK(eight == 8);
  float five;
  std::memcpy(&five, data.data() + header["params.a"]["data_offsets"][0].get<std::size_t>() + 5 * 4, 4);
  CHECK(five == 5.0f);
}

TEST_CASE("the torch export is a pickled dict that LibTorch reads back") {
  const std::string bytes = kd::checkpoints::torch_pickle_bytes({{"params.w", torch::ones({2})}});
  const auto value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  const auto dict = value.toGenericDict();
  CHECK(dict.at("params.w").toTensor().equal(torch::ones({2})));
}

TEST_CASE("choose: the checkpoint of a step whatever its state, else the newest that is valid and accepted") {
  using kd::checkpoints::CheckpointInfo;
  const std::vector<CheckpointInfo> probed = {
      {300, "ckpt_300", "a missing file"}, {200, "ckpt_200", ""}, {100, "ckpt_100", ""}};
  std::vector<std::string> used, skipped;
  const auto use_all = [&](const CheckpointInfo& info) { used.push_back(info.path); };
  const auto skip = [&](const CheckpointInfo& info, const std::string& why) {
    skipped.push_back(info.path + ": " + why);
  };

  // A step: that one, even damaged (its user says why), and nothing else.
  auto chosen = Checkpointer::choose(probed, 300, use_all, skip);
  REQUIRE(chosen);
  CHECK(chosen->step == 300);
  CHECK(used == std::vector<std::string>{"ckpt_300"});
  CHECK(skipped.empty());
  CHECK(!Checkpointer::choose(probed, 250, use_all, skip));
  CHECK_THROWS_AS(Checkpointer::choose(
                      probed, 200, [](const CheckpointInfo&) { throw kd::CorruptionError("bad"); }, skip),
                  kd::CorruptionError);

  // No step: the damaged one is skipped, and one its user rejects as corrupt too.
  used.clear();
  chosen = Checkpointer::choose(
      probed, std::nullopt,
      [&](const CheckpointInfo& info) {
        used.push_back(info.path);
        if (info.step == 200) throw kd::CorruptionError("an Adam moment of the wrong shape");
      },
      skip);
  REQUIRE(chosen);
  CHECK(chosen->step == 100);
  CHECK(used == std::vector<std::string>{"ckpt_200", "ckpt_100"});
  CHECK(skipped == std::vector<std::string>{"ckpt_300: a missing file", "ckpt_200: an Adam moment of the wrong shape"});

  // Other errors are not a damaged checkpoint: they propagate.
  CHECK_THROWS_AS(Checkpointer::choose(
                      probed, std::nullopt, [](const CheckpointInfo&) { throw kd::ConfigError("changed"); }, skip),
                  kd::ConfigError);
  // None accepted.
  CHECK(!Checkpointer::choose(
      probed, std::nullopt, [](const CheckpointInfo&) { throw kd::CorruptionError("no"); }, skip));
}
