#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <random>
#include <sstream>

#include <torch/torch.h>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/io/png.h"
#include "trainer/writers/event_file.h"
#include "trainer/writers/tensorboard.pb.h"
#include "trainer/writers/writer.h"

namespace fs = std::filesystem;
using kd::Tree;
namespace tb = kd::tensorboard;

namespace {

using kd::testing::made_fresh_dir;

// The events of the one event file in `dir`, decoded.
std::vector<tb::Event> events_in(const fs::path& dir) {
  std::vector<tb::Event> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    REQUIRE(entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0);
    for (const auto& record : kd::writers::read_records(entry.path().string())) {
      tb::Event e;
      REQUIRE(e.ParseFromString(record));
      out.push_back(e);
    }
  }
  return out;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("crc32c matches the Castagnoli check value and TFRecord's masking") {
  CHECK(kd::writers::crc32c("123456789") == 0xE3069283u);
  CHECK(kd::writers::crc32c("") == 0u);
  const uint32_t crc = kd::writers::crc32c("abc");
  CHECK(kd::writers::masked_crc32c("abc") == ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST_CASE("an event file starts with the file_version event and holds scalars record by record") {
  const fs::path dir = made_fresh_dir();
  {
    kd::writers::TensorBoardWriter writer(dir.string());
    writer.write_scalars(10, "train", {{"losses/xent", 0.5}, {"metrics/accuracy", 0.75}});
    writer.write_scalars(20, "train", {{"losses/xent", 0.25}});
  }
  const auto events = events_in(dir / "train");
  REQUIRE(events.size() == 3);
  CHECK(events[0].file_version() == "brain.Event:2");
  CHECK(events[1].step() == 10);
  REQUIRE(events[1].summary().value_size() == 2);
  CHECK(events[1].summary().value(0).tag() == "losses/xent");
  CHECK(events[1].summary().value(0).simple_value() == 0.5f);
  CHECK(events[1].summary().value(1).simple_value() == 0.75f);
  CHECK(events[2].step() == 20);
  CHECK(events[1].wall_time() > 1.6e9);
  fs::remove_all(dir);
}

TEST_CASE("the purge marker of a resumed run has TensorFlow's field numbers: Event.session_log = 7") {
  // Checked against TensorFlow's event.proto, not kd's copy of it: Event { ... LogMessage
  // log_message = 6; SessionLog session_log = 7; }, SessionLog { SessionStatus status = 1; },
  // START = 1. A SessionLog under field 6 reaches TensorBoard as a log message, and the
  // replayed steps of a resumed run then show twice.
  const fs::path dir = made_fresh_dir();
  {
    kd::writers::TensorBoardWriter writer(dir.string());
    writer.write_scalars(10, "train", {{"losses/xent", 0.5}});
    writer.truncate_after(10);  // one writer, one event file: its last record is the marker
  }
  std::vector<std::string> records;
  for (const auto& entry : fs::directory_iterator(dir / "train")) {
    for (auto& r : kd::writers::read_records(entry.path().string())) records.push_back(r);
  }
  REQUIRE(!records.empty());
  const std::string& last = records.back();
  // wall_time (field 1, fixed64): tag 0x09 and 8 bytes; step (field 2, varint): 0x10 and 11;
  // then field 7, length-delimited (0x3a), 2 bytes: status (field 1, varint) = START (1).
  REQUIRE(last.size() == 1 + 8 + 2 + 4);
  CHECK(last[0] == '\x09');
  CHECK(last.substr(9) == std::string("\x10\x0b\x3a\x02\x08\x01", 6));
  fs::remove_all(dir);
}

TEST_CASE("a damaged record fails its CRC and a torn last record is dropped") {
  const fs::path dir = made_fresh_dir();
  std::string path;
  {
    kd::writers::EventFileWriter file(dir.string());
    file.write_record("hello");
    file.write_record("world");
    path = file.path();
  }
  CHECK(kd::writers::read_records(path).size() == 3);
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 3);  // a writer killed mid-record
  CHECK(kd::writers::read_records(path).size() == 2);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    const auto first_len = fs::file_size(path) - 3 - 21 - 21;  // rough: corrupt inside record 1's data
    f.seekp(static_cast<std::streamoff>(first_len));
    f.put('X');
  }
  CHECK_THROWS_AS(kd::writers::read_records(path), kd::CorruptionError);
  fs::remove_all(dir);
}

TEST_CASE("an image summary is a PNG that decodes to the exact pixels") {
  const fs::path dir = made_fresh_dir();
  const torch::Tensor image = torch::tensor({0, 50, 100, 150, 200, 255}, torch::kByte).reshape({2, 3, 1});
  {
    kd::writers::TensorBoardWriter writer(dir.string());
    writer.write_summaries(5, "test", {{"summaries/images", kd::writers::SummaryRecord::Kind::kImages, Tree(image)}});
  }
  const auto events = events_in(dir / "test");
  REQUIRE(events.size() == 2);
  const auto& img = events[1].summary().value(0).image();
  CHECK(events[1].summary().value(0).tag() == "summaries/images");
  CHECK(img.height() == 2);
  CHECK(img.width() == 3);
  CHECK(img.colorspace() == 1);
  CHECK(kd::io::decode_png(img.encoded_image_string()).equal(image));
  const torch::Tensor rgb = torch::randint(0, 256, {4, 5, 3}, torch::kByte);
  CHECK(kd::io::decode_png(kd::io::encode_png(rgb)).equal(rgb));
  CHECK_THROWS_AS(kd::io::encode_png(torch::zeros({2, 2})), kd::TypeError);
  CHECK_THROWS_AS(kd::io::decode_png("not a png"), kd::CorruptionError);
  fs::remove_all(dir);
}

TEST_CASE("histogram and text summaries use TensorBoard's histogram and text-plugin layouts") {
  const fs::path dir = made_fresh_dir();
  const Tree hist = Tree::dict({{"counts", torch::tensor({1.0, 3.0})}, {"edges", torch::tensor({0.0, 1.0, 2.0})}});
  const Tree texts = Tree::list({Tree("first"), Tree("second")});
  {
    kd::writers::TensorBoardWriter writer(dir.string());
    writer.write_summaries(1, "train",
                           {{"summaries/hist", kd::writers::SummaryRecord::Kind::kHistogram, hist},
                            {"summaries/texts", kd::writers::SummaryRecord::Kind::kTexts, texts}});
    writer.write_text(0, "train", "config", "seed: 0");
  }
  const auto events = events_in(dir / "train");
  REQUIRE(events.size() == 3);
  const auto& h = events[1].summary().value(0).histo();
  CHECK(h.min() == 0.0);
  CHECK(h.max() == 2.0);
  CHECK(h.num() == 4.0);
  CHECK(std::vector<double>(h.bucket_limit().begin(), h.bucket_limit().end()) == std::vector<double>{1.0, 2.0});
  CHECK(std::vector<double>(h.bucket().begin(), h.bucket().end()) == std::vector<double>{1.0, 3.0});
  CHECK(h.sum() == Approx(0.5 + 3 * 1.5));
  const auto& t = events[1].summary().value(1);
  CHECK(t.metadata().plugin_data().plugin_name() == "text");
  CHECK(t.tensor().dtype() == 7);
  REQUIRE(t.tensor().string_val_size() == 2);
  CHECK(t.tensor().string_val(1) == "second");
  CHECK(events[2].summary().value(0).tensor().string_val(0) == "seed: 0");
  fs::remove_all(dir);
}

TEST_CASE("JSONL and CSV records parse back to the same numbers, and truncate after a step") {
  const fs::path dir = made_fresh_dir();
  {
    kd::writers::JsonlWriter jsonl((dir / "metrics.jsonl").string());
    kd::writers::CsvWriter csv(dir.string());
    for (auto* w : std::vector<kd::writers::MetricWriter*>{&jsonl, &csv}) {
      w->write_scalars(100, "train", {{"losses/xent", 0.123456789}, {"metrics/accuracy", 0.5}});
      w->write_scalars(200, "train", {{"losses/xent", 0.1}, {"metrics/accuracy", 0.625}, {"perf_stats/x", 3.0}});
      w->write_scalars(300, "train", {{"losses/xent", std::nan("")}, {"metrics/accuracy", 0.75}});
    }
  }
  const auto records = kd::writers::read_jsonl((dir / "metrics.jsonl").string());
  REQUIRE(records.size() == 3);
  CHECK(records[0].values[0].second == 0.123456789);
  CHECK(std::isnan(records[2].values[0].second));
  CHECK(read_text(dir / "metrics_train.csv") ==
        "step,losses/xent,metrics/accuracy,perf_stats/x\n"
        "100,0.123456789,0.5,\n"
        "200,0.1,0.625,3\n"
        "300,nan,0.75,\n");
  kd::writers::JsonlWriter jsonl((dir / "metrics.jsonl").string());
  kd::writers::CsvWriter csv(dir.string());
  jsonl.truncate_after(200);
  csv.truncate_after(200);
  CHECK(kd::writers::read_jsonl((dir / "metrics.jsonl").string()).size() == 2);
  CHECK(read_text(dir / "metrics_train.csv") ==
        "step,losses/xent,metrics/accuracy,perf_stats/x\n100,0.123456789,0.5,\n200,0.1,0.625,3\n");
  fs::remove_all(dir);
}

TEST_CASE("with replace_existing, a step's record of a collection replaces the one there, in step order") {
  const fs::path dir = made_fresh_dir();
  kd::writers::JsonlWriter jsonl((dir / "metrics.jsonl").string());
  kd::writers::CsvWriter csv(dir.string());
  kd::writers::TensorBoardWriter tensorboard(dir.string());
  const std::vector<kd::writers::MetricWriter*> writers = {&jsonl, &csv, &tensorboard};
  for (auto* w : writers) {
    w->write_scalars(100, "test", {{"metrics/accuracy", 0.5}});
    w->write_scalars(100, "train", {{"losses/xent", 0.9}});
    w->write_scalars(200, "test", {{"metrics/accuracy", 0.6}});
    w->write_scalars(300, "test", {{"metrics/accuracy", 0.7}});
    w->write_text(300, "test", "summaries/note", "kept");  // another tag at the same step
  }
  for (auto* w : writers) {
    w->replace_existing(true);
    w->write_scalars(200, "test", {{"metrics/accuracy", 0.65}});  // evaluated again
    w->write_scalars(300, "test", {{"metrics/accuracy", 0.75}});
    w->write_scalars(250, "test", {{"metrics/accuracy", 0.62}});  // new, between two steps
  }
  jsonl.flush();
  std::vector<std::string> seen;
  for (const auto& r : kd::writers::read_jsonl((dir / "metrics.jsonl").string())) {
    seen.push_back(r.collection + " " + std::to_string(r.step) + " " + std::to_string(r.values[0].second));
  }
  CHECK(seen == std::vector<std::string>{"test 100 0.500000", "train 100 0.900000", "test 200 0.650000",
                                         "test 250 0.620000", "test 300 0.750000"});
  CHECK(read_text(dir / "metrics_test.csv") == "step,metrics/accuracy\n100,0.5\n200,0.65\n250,0.62\n300,0.75\n");
  CHECK(read_text(dir / "metrics_train.csv") == "step,losses/xent\n100,0.9\n");
  // TensorBoard: one file, steps in order, each tag once per step, the other tag of step 300 kept.
  std::vector<std::string> events;
  for (const auto& e : events_in(dir / "test")) {
    if (e.has_file_version()) continue;
    for (const auto& v : e.summary().value()) {
      std::ostringstream line;  // (GCC 12 warns falsely on string concatenation here)
      line << e.step() << " " << v.tag();
      if (v.has_simple_value()) line << " " << std::fixed << std::setprecision(6) << v.simple_value();
      events.push_back(line.str());
    }
  }
  CHECK(events == std::vector<std::string>{"100 metrics/accuracy 0.500000", "200 metrics/accuracy 0.650000",
                                           "250 metrics/accuracy 0.620000", "300 summaries/note",
                                           "300 metrics/accuracy 0.750000"});
  CHECK(std::distance(fs::directory_iterator(dir / "test"), fs::directory_iterator()) == 1);
  fs::remove_all(dir);
}
