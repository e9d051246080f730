// Metric writers: where the values of each logged step go. The trainer writes one record per
// collection ("train", or an eval's name) and step.
//
//   writer: {jsonl: true, csv: true, tensorboard: true}   # each on by default
//   writer: {report: true}        # also WORKDIR/report.html, kept current (trainer/report/report.h)
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trainer/tree/tree.h"

namespace kd::config {
class Node;
}
namespace kd::tensorboard {
class Event;
}

namespace kd::writers {

using Scalars = std::vector<std::pair<std::string, double>>;

// A summary's value to record (see summaries/summary.h for the layouts).
struct SummaryRecord {
  enum class Kind { kImages, kHistogram, kTexts };
  std::string tag;  // "summaries/<name>"
  Kind kind;
  Tree value;
};

class MetricWriter {
 public:
  virtual ~MetricWriter() = default;
  virtual void write_scalars(int64_t step, const std::string& collection, const Scalars& values) = 0;
  // Writers that cannot show summaries or text ignore them.
  virtual void write_summaries(int64_t step, const std::string& collection, const std::vector<SummaryRecord>& records) {
  }
  virtual void write_text(int64_t step, const std::string& collection, const std::string& tag,
                          const std::string& text) {}
  // A resumed run drops what was logged after its checkpoint's step (it is logged again).
  virtual void truncate_after(int64_t step) {}
  virtual void flush() {}

  // From now on a record of a collection at a step that already has one replaces it, in step
  // order, instead of being appended (kd eval of a step evaluated before, which holds the
  // workdir alone). Rewrites the writer's file for each record: for a few records, not a run.
  void replace_existing(bool on) { replace_ = on; }

 protected:
  bool replace_ = false;
};

// One JSON object per line: {"step": N, "collection": "train", "losses/xent": 0.41, ...}.
// Appends to an existing file (a resumed run continues it); each record is flushed.
class JsonlWriter : public MetricWriter {
 public:
  explicit JsonlWriter(const std::string& path);
  void write_scalars(int64_t step, const std::string& collection, const Scalars& values) override;
  // (With replace_existing: the file rewritten without that step's record of the collection, the
  // new one after the last record of a step <= it.)
  void truncate_after(int64_t step) override;
  void flush() override;

 private:
  std::string path_;
  std::ofstream out_;
};

// Reads a metrics.jsonl file back (for tests, `kd eval` and `kd report`): one (step, collection,
// values) per line. Throws kd::CorruptionError naming the line of a malformed record; with
// `torn_tail`, a last line cut short (no newline, not JSON: a writer killed within it) is left out
// and *torn_tail set instead.
struct JsonlRecord {
  int64_t step;
  std::string collection;
  Scalars values;
};
std::vector<JsonlRecord> read_jsonl(const std::string& path, bool* torn_tail = nullptr);

// WORKDIR/metrics_<collection>.csv: a header row ("step" and every value's name), then one row
// per logged step. A name that appears later adds a column (the file is rewritten with it).
class CsvWriter : public MetricWriter {
 public:
  explicit CsvWriter(std::string workdir) : workdir_(std::move(workdir)) {}
  void write_scalars(int64_t step, const std::string& collection, const Scalars& values) override;
  void truncate_after(int64_t step) override;

 private:
  struct Table {
    std::vector<std::string> columns;            // after "step"
    std::vector<std::vector<std::string>> rows;  // cells, "step" first
  };
  Table& table(const std::string& collection);
  void rewrite(const std::string& collection, const Table& t) const;
  std::string path(const std::string& collection) const { return workdir_ + "/metrics_" + collection + ".csv"; }

  std::string workdir_;
  std::map<std::string, Table> tables_;
};

// TensorBoard event files, one directory per collection (WORKDIR/train, WORKDIR/<eval>):
// scalars, images (PNG), histograms and texts.
class EventFileWriter;
class TensorBoardWriter : public MetricWriter {
 public:
  explicit TensorBoardWriter(std::string workdir);
  ~TensorBoardWriter() override;
  void write_scalars(int64_t step, const std::string& collection, const Scalars& values) override;
  void write_summaries(int64_t step, const std::string& collection, const std::vector<SummaryRecord>& records) override;
  void write_text(int64_t step, const std::string& collection, const std::string& tag,
                  const std::string& text) override;
  // Writes a SessionLog START at step + 1 to every collection, so TensorBoard drops what an
  // earlier run logged after `step`.
  void truncate_after(int64_t step) override;
  void flush() override;

 private:
  EventFileWriter& file(const std::string& collection);
  // Appends `event` to the collection's file or, with replace_existing, rewrites the
  // collection's event files as one: the values of the same tags at the event's step left out,
  // the event after the last one of a step <= its own (TensorBoard drops later steps when it
  // meets an earlier one).
  void write_event(const std::string& collection, const tensorboard::Event& event);
  std::string workdir_;
  std::map<std::string, std::unique_ptr<EventFileWriter>> files_;
};

// The experiment's `writer:` section: which writers a run's workdir gets.
struct WriterOptions {
  bool jsonl = true;        // jsonl: WORKDIR/metrics.jsonl
  bool csv = true;          // csv: WORKDIR/metrics_<collection>.csv
  bool tensorboard = true;  // tensorboard: event files under WORKDIR/<collection>/
  bool report = false;      // report: WORKDIR/report.html (made by the run: trainer/report/)

  static WriterOptions from_config(const config::Node& node);
};

// The writers `options` choose, writing into `workdir`.
std::vector<std::unique_ptr<MetricWriter>> make_writers(const WriterOptions& options, const std::string& workdir);

}  // namespace kd::writers
