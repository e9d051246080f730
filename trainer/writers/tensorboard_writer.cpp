#include <chrono>
#include <cmath>
#include <filesystem>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/writers/event_file.h"
#include "trainer/writers/png.h"
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
  file(collection).write_record(e.SerializeAsString());
  file(collection).flush();
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
        img->set_encoded_image_string(encode_png(image));
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
  file(collection).write_record(e.SerializeAsString());
  file(collection).flush();
}

void TensorBoardWriter::write_text(int64_t step, const std::string& collection, const std::string& tag,
                                   const std::string& text) {
  tensorboard::Event e = event_at(step);
  auto* value = e.mutable_summary()->add_value();
  value->set_tag(tag);
  set_text(value, {text});
  file(collection).write_record(e.SerializeAsString());
  file(collection).flush();
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
