// Metric writers: where the values of each logged step go. The trainer writes one record per
// collection ("train", or an eval's name) and step.
//
//   writer: {jsonl: true}      # WORKDIR/metrics.jsonl (default on)
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kd::writers {

using Scalars = std::vector<std::pair<std::string, double>>;

class MetricWriter {
 public:
  virtual ~MetricWriter() = default;
  virtual void write_scalars(int64_t step, const std::string& collection, const Scalars& values) = 0;
  virtual void flush() {}
};

// One JSON object per line: {"step": N, "collection": "train", "losses/xent": 0.41, ...}.
// Appends to an existing file (a resumed run continues it); each record is flushed.
class JsonlWriter : public MetricWriter {
 public:
  explicit JsonlWriter(const std::string& path);
  void write_scalars(int64_t step, const std::string& collection, const Scalars& values) override;
  void flush() override;

 private:
  std::string path_;
  std::ofstream out_;
};

// Reads a metrics.jsonl file back (for tests and `kd eval`): one (step, collection, values)
// per line. Throws kd::CorruptionError naming the line of a malformed record.
struct JsonlRecord {
  int64_t step;
  std::string collection;
  Scalars values;
};
std::vector<JsonlRecord> read_jsonl(const std::string& path);

}  // namespace kd::writers
