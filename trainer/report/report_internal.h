// What kd report reads from a workdir, and the page made of it (report.cpp reads, page.cpp
// writes the HTML; separate so that tests check each).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "trainer/writers/writer.h"

namespace kd::report {

struct ParamRow {
  std::string name, tensor;  // "layers.0.weight", "float32[512, 784]"
  int64_t numel = 0;
};

struct ImageRecord {
  std::string collection, tag;
  int64_t step = 0;
  std::string png;  // the encoded image
};

struct RunData {
  std::string name;  // the workdir's folder name (its whole path when two runs share it)
  std::string workdir;
  std::string experiment;  // config.yaml's text ("" when absent)
  std::vector<writers::JsonlRecord> records;
  std::optional<int64_t> model_step;  // the checkpoint the model table was read from
  std::vector<ParamRow> model;
  std::vector<ImageRecord> images;  // the newest of each (collection, tag)
  std::vector<std::string> notes;   // what could not be read, for the page
  // A point of a sweep (kd sweep): the values it sets, in the sweep's order; empty otherwise.
  std::vector<std::pair<std::string, std::string>> sweep_values;
};

// Reads `workdir`; with `model` given (the live writer's, read once), no checkpoint is read.
RunData read_run(const std::string& workdir, const std::vector<ParamRow>* model = nullptr);

// The HTML page for `runs`.
std::string render_page(const std::vector<RunData>& runs);

// "<!-- kd report -->": the page's first line.
extern const char* const kMarker;

// Standard base64 of `bytes`, with padding.
std::string base64(const std::string& bytes);

// The embedded assets (generated from report.js, report.css and dygraphs at build time).
extern const char* const kDygraphsJs;
extern const char* const kDygraphsCss;
extern const char* const kReportJs;
extern const char* const kReportCss;

}  // namespace kd::report
