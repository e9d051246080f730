#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/io/png.h"
#include "trainer/writers/event_file.h"
#include "trainer/writers/tensorboard.pb.h"
#include "trainer/writers/writer.h"

namespace kd::writers {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

tensorboard::Event event_at(int64_t step) {
  tensorboard::Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  return e;
}

void set_text(tensorboard::Summary::Value* value, const std::vector<std::string>& texts) {
  value->mutable_metadata()->mutable_plugin_data()->set_plugin_name("text");
  auto* tensor = value->mutable_tensor();
  tensor->set_dtype(7);  // DT_STRING
  tensor->mutable_tensor_shape()->add_dim()->set_size(static_cast<int64_t>(texts.size()));
  for (const auto& t : texts) tensor->add_string_val(t);
}

void set_histogram(tensorboard::Summary::Value* value, const Tree& hist) {
  const torch::Tensor counts = hist.at("counts").tensor().to(torch::kDouble).contiguous();
  const torch::Tensor edges = hist.at("edges").tensor().to(torch::kDouble).contiguous();
  auto* h = value->mutable_histo();
  const auto* c = counts.data_ptr<double>();
  const auto* e = edges.data_ptr<double>();
  double num = 0, sum = 0, squares = 0;
  for (int64_t i = 0; i < counts.numel(); ++i) {
    const double center = 0.5 * (e[i] + e[i + 1]);  // the values themselves are not kept
    num += c[i];
    sum += c[i] * center;
    squares += c[i] * center * center;
    h->add_bucket_limit(e[i + 1]);
    h->add_bucket(c[i]);
  }
  h->set_min(e[0]);
  h->set_max(e[edges.numel() - 1]);
  h->set_num(num);
  h->set_sum(sum);
  h->set_sum_squares(squares);
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(std::string workdir) : workdir_(std::move(workdir)) {}
TensorBoardWriter::~TensorBoardWriter() = default;

EventFileWriter& TensorBoardWriter::file(const std::string& collection) {
  auto& f = files_[collection];
  if (!f) f = std::make_unique<EventFileWriter>(workdir_ + "/" + collection);
  return *f;
}

void TensorBoardWriter::write_scalars(int64_t step, const std::string& collection, const Scalars& values) {
  tensorboard::Event e = event_at(step);
  for (const auto& [name, v] : values) {
    auto* value = e.mutable_summary()->add_value();
    value->set_tag(name);
    value->set_simple_value(static_cast<float>(v));
  }
  write_event(collection, e);
}

void TensorBoardWriter::write_summaries(int64_t step, const std::string& collection,
                                        const std::vector<SummaryRecord>& records) {
  if (records.empty()) return;
  tensorboard::Event e = event_at(step);
  for (const auto& r : records) {
    auto* value = e.mutable_summary()->add_value();
    value->set_tag(r.tag);
    switch (r.kind) {
      case SummaryRecord::Kind::kImages: {
        const torch::Tensor image = r.value.tensor();
        auto* img = value->mutable_image();
        img->set_height(static_cast<int32_t>(image.size(0)));
        img->set_width(static_cast<int32_t>(image.size(1)));
        img->set_colorspace(static_cast<int32_t>(image.size(2)));
        img->set_encoded_image_string(io::encode_png(image));
        break;
      }
      case SummaryRecord::Kind::kHistogram:
        set_histogram(value, r.value);
        break;
      case SummaryRecord::Kind::kTexts: {
        std::vector<std::string> texts;
        for (const auto& [path, leaf] : r.value.flatten()) texts.push_back(leaf.str());
        set_text(value, texts);
        break;
      }
    }
  }
  write_event(collection, e);
}

void TensorBoardWriter::write_text(int64_t step, const std::string& collection, const std::string& tag,
                                   const std::string& text) {
  tensorboard::Event e = event_at(step);
  auto* value = e.mutable_summary()->add_value();
  value->set_tag(tag);
  set_text(value, {text});
  write_event(collection, e);
}

void TensorBoardWriter::write_event(const std::string& collection, const tensorboard::Event& event) {
  if (!replace_) {
    file(collection).write_record(event.SerializeAsString());
    file(collection).flush();
    return;
  }
  files_.erase(collection);  // closed: its file is rewritten below
  const std::filesystem::path dir = std::filesystem::path(workdir_) / collection;
  std::vector<std::filesystem::path> old_files;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(dir, ec)) {
    if (f.path().filename().string().rfind("events.out.tfevents.", 0) == 0) old_files.push_back(f.path());
  }
  std::sort(old_files.begin(), old_files.end());  // named by their creation's second: in time order
  std::set<std::string> tags;
  for (const auto& v : event.summary().value()) tags.insert(v.tag());
  std::vector<tensorboard::Event> events;
  std::size_t insert_at = 0;  // after the last event of a step <= the new one's
  for (const auto& f : old_files) {
    for (const std::string& record : read_records(f.string())) {
      tensorboard::Event e;
      if (!e.ParseFromString(record))
        throw CorruptionError("\"" + f.string() + "\" holds a record that is not an Event");
      if (e.has_file_version()) continue;  // the new file has its own
      if (e.step() == event.step() && e.has_summary()) {
        auto* values = e.mutable_summary()->mutable_value();
        for (int i = values->size() - 1; i >= 0; --i) {
          if (tags.count(values->Get(i).tag())) values->DeleteSubrange(i, 1);
        }
        if (values->empty()) continue;  // every value replaced
      }
      events.push_back(std::move(e));
      if (events.back().step() <= event.step()) insert_at = events.size();
    }
  }
  events.insert(events.begin() + static_cast<std::ptrdiff_t>(insert_at), event);
  // The new file under a name of its own, complete before the old ones go.
  const std::filesystem::path tmp = dir / "tmp.kd-rewrite";
  std::filesystem::remove_all(tmp, ec);
  std::string written;
  {
    EventFileWriter out(tmp.string());
    for (const auto& e : events) out.write_record(e.SerializeAsString());
    out.flush();
    written = out.path();
  }
  const std::filesystem::path target = dir / std::filesystem::path(written).filename();
  std::filesystem::rename(written, target);
  std::filesystem::remove_all(tmp);
  for (const auto& f : old_files) {
    if (f != target) std::filesystem::remove(f);
  }
}

void TensorBoardWriter::truncate_after(int64_t step) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(workdir_, ec)) {
    if (!entry.is_directory()) continue;
    bool has_events = false;
    for (const auto& f : std::filesystem::directory_iterator(entry.path(), ec)) {
      has_events = has_events || f.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
    }
    if (!has_events) continue;
    tensorboard::Event e = event_at(step + 1);
    e.mutable_session_log()->set_status(tensorboard::SessionLog::START);
    EventFileWriter& f = file(entry.path().filename().string());
    f.write_record(e.SerializeAsString());
    f.flush();
  }
}

void TensorBoardWriter::flush() {
  for (auto& [name, f] : files_) f->flush();
}

}  // namespace kd::writers
