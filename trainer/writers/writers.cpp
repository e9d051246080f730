#include "trainer/common/error.h"
#include "trainer/config/node.h"
#include "trainer/writers/writer.h"

namespace kd::writers {

WriterOptions WriterOptions::from_config(const config::Node& node) {
  const WriterOptions defaults;
  WriterOptions o;
  o.jsonl = node.get_bool("jsonl", defaults.jsonl);
  o.csv = node.get_bool("csv", defaults.csv);
  o.tensorboard = node.get_bool("tensorboard", defaults.tensorboard);
  o.report = node.get_bool("report", defaults.report);
#ifndef KD_WITH_REPORT
  if (o.report) {
    throw ConfigError(node.child("report").where() +
                      ": writer.report: this kd was built without the report (-DKD_WITH_REPORT=OFF); set report: "
                      "false, or configure kd with -DKD_WITH_REPORT=ON (it needs Debian's libjs-dygraphs)");
  }
#endif
  if (o.report && !o.jsonl) {
    throw ConfigError(node.child("report").where() +
                      ": writer.report draws its charts from metrics.jsonl: set writer.jsonl: true, or report: false");
  }
  node.check_unknown_keys();
  return o;
}

std::vector<std::unique_ptr<MetricWriter>> make_writers(const WriterOptions& options, const std::string& workdir) {
  std::vector<std::unique_ptr<MetricWriter>> out;
  if (options.jsonl) out.push_back(std::make_unique<JsonlWriter>(workdir + "/metrics.jsonl"));
  if (options.csv) out.push_back(std::make_unique<CsvWriter>(workdir));
  if (options.tensorboard) out.push_back(std::make_unique<TensorBoardWriter>(workdir));
  return out;
}

}  // namespace kd::writers
