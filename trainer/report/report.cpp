#include "trainer/report/report.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/io/file_system.h"
#include "trainer/report/report_internal.h"
#include "trainer/tree/tree.h"
#include "trainer/writers/event_file.h"
#include "trainer/writers/tensorboard.pb.h"

namespace kd::report {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The newest valid checkpoint's params, or nullopt when there is none yet.
std::optional<int64_t> read_model(const std::string& workdir, std::vector<ParamRow>& rows,
                                  std::vector<std::string>& notes) {
  const std::string directory = workdir + "/checkpoints";
  if (!fs::is_directory(directory)) return std::nullopt;
  checkpoints::Checkpointer checkpointer(directory, {});
  const auto use = [&](const checkpoints::CheckpointInfo& info) {
    if (!info.valid()) throw CorruptionError(info.problem);
    rows.clear();
    for (const auto& [name, t] : checkpoints::read_checkpoint_tensors(info.path, "params")) {
      rows.push_back({name, Tree(t).describe(), t.numel()});
    }
  };
  const auto skip = [&](const checkpoints::CheckpointInfo& info, const std::string& why) {
    notes.push_back("checkpoint " + info.path + " is damaged (" + why + "): the model table is an older one's");
  };
  const auto chosen = checkpointer.choose(std::nullopt, use, skip);
  return chosen ? std::optional<int64_t>(chosen->step) : std::nullopt;
}

// The newest image of each (collection, tag) in the event files of WORKDIR/<collection>/.
std::vector<ImageRecord> read_images(const std::string& workdir, std::vector<std::string>& notes) {
  std::map<std::pair<std::string, std::string>, ImageRecord> newest;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(workdir, ec)) {
    if (!entry.is_directory() || entry.path().filename() == "checkpoints") continue;
    const std::string collection = entry.path().filename().string();
    std::vector<fs::path> files;
    for (const auto& file : fs::directory_iterator(entry.path(), ec)) {
      if (file.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(file.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      std::vector<std::string> records;
      try {
        records = writers::read_records(file.string());
      } catch (const Error& e) {
        notes.push_back("the images of " + file.string() + " were not read: " + e.what());
        continue;
      }
      for (const auto& record : records) {
        tensorboard::Event event;
        if (!event.ParseFromString(record) || !event.has_summary()) continue;
        for (const auto& value : event.summary().value()) {
          if (!value.has_image()) continue;
          auto& slot = newest[{collection, value.tag()}];
          if (slot.png.empty() || event.step() >= slot.step) {
            slot = {collection, value.tag(), event.step(), value.image().encoded_image_string()};
          }
        }
      }
    }
  }
  std::vector<ImageRecord> out;
  for (auto& [key, image] : newest) out.push_back(std::move(image));
  return out;
}

}  // namespace

const char* const kMarker = "<!-- kd report -->";

RunData read_run(const std::string& workdir, const std::vector<ParamRow>* model) {
  RunData run;
  run.workdir = workdir;
  run.name = fs::path(workdir).lexically_normal().filename().string();
  if (run.name.empty()) run.name = fs::path(workdir).lexically_normal().parent_path().filename().string();
  std::error_code ec;
  if (!fs::is_directory(workdir, ec)) {
    throw ConfigError("--workdir=" + workdir + " is not a directory; give the workdir of a kd run");
  }
  const fs::path jsonl = fs::path(workdir) / "metrics.jsonl";
  const fs::path config = fs::path(workdir) / "config.yaml";
  if (!fs::exists(jsonl) && !fs::exists(config)) {
    throw ConfigError("--workdir=" + workdir +
                      " has neither metrics.jsonl nor config.yaml: is it the workdir of a kd run "
                      "(the experiment's `workdir`)?");
  }
  if (fs::exists(config)) run.experiment = read_text(config);
  if (fs::exists(jsonl)) {
    bool torn = false;
    run.records = writers::read_jsonl(jsonl.string(), &torn);
    if (torn)
      run.notes.push_back("the last line of metrics.jsonl is cut short (a run stopped while writing it): left out");
  } else {
    run.notes.push_back("no metrics.jsonl (writer.jsonl is false, or nothing was logged yet): no charts");
  }
  if (model) {
    run.model = *model;
  } else {
    run.model_step = read_model(workdir, run.model, run.notes);
  }
  run.images = read_images(workdir, run.notes);
  return run;
}

// The runs of a sweep's directory (kd sweep: DIR/sweep.json lists the points), each named by its
// point and carrying its values; a point not started yet is left out with a note on the first.
std::vector<RunData> read_sweep(const fs::path& dir) {
  const std::string file = (dir / "sweep.json").string();
  nlohmann::ordered_json manifest;  // ordered: the swept keys in the sweep's order
  try {
    std::ifstream in(dir / "sweep.json");
    manifest = nlohmann::ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw CorruptionError(file + " is not a sweep manifest: " + e.what());
  }
  const auto points = manifest.is_object() ? manifest.find("points") : manifest.end();
  if (points == manifest.end() || !points->is_array()) {
    throw CorruptionError(file + " is not a sweep manifest (kd sweep writes one): it has no list of \"points\"");
  }
  std::vector<RunData> runs;
  std::vector<std::string> waiting;
  for (const auto& point : *points) {
    const auto name_at = point.is_object() ? point.find("name") : point.end();
    if (name_at == point.end() || !name_at->is_string()) {
      throw CorruptionError(file + ": a point without a \"name\": " + point.dump());
    }
    const std::string name = name_at->get<std::string>();
    const auto workdir_at = point.find("workdir");
    const fs::path workdir =
        dir / (workdir_at != point.end() && workdir_at->is_string() ? workdir_at->get<std::string>() : name);
    if (!fs::exists(workdir / "metrics.jsonl") && !fs::exists(workdir / "config.yaml")) {
      waiting.push_back(name);
      continue;
    }
    RunData run = read_run(workdir.string());
    run.name = name;
    if (const auto values = point.find("values"); values != point.end() && values->is_object()) {
      for (const auto& [key, value] : values->items()) {
        run.sweep_values.emplace_back(key, value.is_string() ? value.get<std::string>() : value.dump());
      }
    }
    runs.push_back(std::move(run));
  }
  if (runs.empty()) {
    throw ConfigError("--workdir=" + dir.string() + " is a sweep none of whose " + std::to_string(points->size()) +
                      " points has started yet (kd sweep runs them)");
  }
  if (!waiting.empty()) runs.front().notes.push_back("sweep points not started yet: " + join_names(waiting));
  return runs;
}

std::string render(const std::vector<std::string>& workdirs, std::size_t* count) {
  if (workdirs.empty()) throw ConfigError("kd report needs at least one --workdir");
  std::vector<RunData> runs;
  std::set<std::string> seen;
  for (const auto& w : workdirs) {
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(w, ec);
    if (!seen.insert(ec ? w : canonical.string()).second) {
      throw ConfigError("--workdir=" + w + " is given twice; give each run once");
    }
    if (fs::exists(fs::path(w) / "sweep.json") && !fs::exists(fs::path(w) / "config.yaml")) {
      for (RunData& run : read_sweep(w)) runs.push_back(std::move(run));
    } else {
      runs.push_back(read_run(w));
    }
  }
  // Two runs of one folder name: their whole paths tell them apart.
  std::map<std::string, int> uses;
  for (const auto& r : runs) ++uses[r.name];
  for (auto& r : runs) {
    if (uses[r.name] > 1) r.name = r.workdir;
  }
  if (count) *count = runs.size();
  return render_page(runs);
}

bool is_report(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string first(std::char_traits<char>::length(kMarker), '\0');
  in.read(first.data(), static_cast<std::streamsize>(first.size()));
  return in.good() && first == kMarker;
}

std::size_t write(const std::vector<std::string>& workdirs, const std::string& out, bool overwrite) {
  std::error_code ec;
  if (fs::is_directory(out, ec)) throw ConfigError("--out=" + out + " is a directory; give the file to write");
  if (fs::exists(out, ec) && !overwrite && !is_report(out)) {
    throw ConfigError("--out=" + out + " exists and is not a kd report: choose another --out, or pass --overwrite");
  }
  std::size_t runs = 0;
  const std::string page = render(workdirs, &runs);
  io::write_file_atomically(*io::posix_file_system(), out, page);
  return runs;
}

namespace {

class ReportWriter final : public writers::MetricWriter {
 public:
  ReportWriter(std::string workdir, std::function<void(const std::string&)> warn, double min_seconds)
      : workdir_(std::move(workdir)), warn_(std::move(warn)), min_seconds_(min_seconds) {}

  void write_scalars(int64_t, const std::string& collection, const writers::Scalars&) override {
    dirty_ = true;
    // An eval's values are rare and wanted at once; the training ones at most every interval_.
    const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_).count();
    if (collection == "train" && written_ && since < interval_) return;
    rewrite();
  }
  void write_summaries(int64_t, const std::string&, const std::vector<writers::SummaryRecord>&) override {
    dirty_ = true;
  }
  void flush() override {
    if (dirty_) rewrite();
  }

 private:
  void rewrite() {
    if (off_) return;
    const auto start = std::chrono::steady_clock::now();
    written_ = true;
    dirty_ = false;
    const std::string page = workdir_ + "/report.html";
    try {
      if (!checked_ && fs::exists(page) && !is_report(page)) {
        off_ = true;
        throw ConfigError(page + " exists and is not a kd report: it is left as it is, and no report is written");
      }
      checked_ = true;
      RunData run = read_run(workdir_, model_.empty() ? nullptr : &model_);
      if (model_.empty()) {
        model_ = run.model;  // the shapes do not change during a run: read once
        model_step_ = run.model_step;
      }
      run.model_step = model_step_;
      io::write_file_atomically(*io::posix_file_system(), page, render_page({run}));
    } catch (const std::exception& e) {
      if (!warned_ && warn_) warn_(std::string("writer.report: ") + e.what());
      warned_ = true;
    }
    // A page that takes long to make is made less often: at most a tenth of the time goes to it.
    last_ = std::chrono::steady_clock::now();
    interval_ = std::max(min_seconds_, 10 * std::chrono::duration<double>(last_ - start).count());
  }

  std::string workdir_;
  std::function<void(const std::string&)> warn_;
  double min_seconds_, interval_ = 0;
  std::vector<ParamRow> model_;
  std::optional<int64_t> model_step_;
  std::chrono::steady_clock::time_point last_{};
  bool written_ = false, dirty_ = false, warned_ = false, checked_ = false, off_ = false;
};

}  // namespace

std::unique_ptr<writers::MetricWriter> make_report_writer(std::string workdir,
                                                          std::function<void(const std::string&)> warn,
                                                          double min_seconds) {
  return std::make_unique<ReportWriter>(std::move(workdir), std::move(warn), min_seconds);
}

}  // namespace kd::report
