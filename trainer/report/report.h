// kd::report: a run to look at, as one self-contained HTML file (no network): a chart per logged
// tag, grouped by prefix (losses, metrics, schedules, perf_stats, ...), a series per collection and
// per run, with zoom (drag; double-click resets), smoothing and a log scale; the latest values, the
// experiment, the model's parameters and the image summaries.
//
//   kd report --workdir=W [--workdir=W2 ...] [--out=F.html]     # the command
//   writer: {report: true}                                      # WORKDIR/report.html, kept current
//
// A workdir's charts come from metrics.jsonl, its experiment from config.yaml, its model table
// from the newest valid checkpoint's params, its images from the TensorBoard event files.
// The charts are drawn by dygraphs (Debian's libjs-dygraphs), embedded when kd is built.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trainer/writers/writer.h"

namespace kd::report {

// The page for `workdirs`; a sweep's directory (kd sweep: it holds sweep.json) stands for its
// points, with a table of their values and last metrics. Throws kd::ConfigError for a path that
// is not a kd workdir, and kd::CorruptionError for a metrics.jsonl that does not parse (naming
// the line). `runs`, when given, gets the number of runs on the page.
std::string render(const std::vector<std::string>& workdirs, std::size_t* runs = nullptr);

// render()'s page written to `out` atomically; returns the number of runs on it. An existing file
// is replaced only when it is a kd report, or with `overwrite`; otherwise kd::ConfigError.
std::size_t write(const std::vector<std::string>& workdirs, const std::string& out, bool overwrite = false);

// Whether the file at `path` is a page render() wrote.
bool is_report(const std::string& path);

// The writer behind `writer: {report: true}`: rewrites WORKDIR/report.html atomically after the
// values of a log step are written (at most every `min_seconds`, so a run that logs often does not
// spend its time on pages) and on flush(), at the end of training and of each kd eval. It reads
// what the other writers wrote, so it comes after them. A page that fails is reported to `warn`
// once and never stops the run.
std::unique_ptr<writers::MetricWriter> make_report_writer(std::string workdir,
                                                          std::function<void(const std::string&)> warn,
                                                          double min_seconds = 2.0);

}  // namespace kd::report
