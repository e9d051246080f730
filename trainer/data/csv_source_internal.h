// The Csv data source (registered as `Csv`): a table of numbers with a header, a row per example.
//
//   train_ds: {type: Csv, path: data.csv, label_column: species, split: train, test_fraction: 0.2}
//
// Every column but the label column becomes `batch.features` (float32 [N, F]); the label column
// becomes `batch.label`: int64 class indices when its cells are whole numbers or words (words map
// to indices in the order of `classes`, or in sorted order: the same for both splits of a file),
// float32 otherwise (`label_dtype: int64 | float32` says which, instead of guessing from the
// cells). `label_column` is a header name or a 0-based index (-1: the last). Class indices are
// checked as the file loads: each in [0, num_classes) (>= 0 without `num_classes`), or equal to
// `ignore_label` (e.g. -100, for a loss and metrics with ignore_index: -100).
// `split: train | test` divides one file by a seeded shuffle of its rows (the same on every
// machine), `test_fraction` of them for test. Errors name the file, line and column; a cell of
// nan or inf is one unless `allow_non_finite: true`. A UTF-8 byte-order mark is skipped.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "trainer/config/node.h"
#include "trainer/data/source.h"

namespace kd::data {

class CsvSource : public Source {
 public:
  explicit CsvSource(const config::Node& options);
  Tree load() const override;
  std::string describe() const override;
  std::vector<std::string> warnings() const override { return warnings_; }

 private:
  // The file's cells: the header's names (none without a header), the rows, each row's line.
  struct Table {
    std::vector<std::string> names;
    std::vector<std::vector<std::string>> rows;
    std::vector<int64_t> line_of;
  };
  Table read_table() const;
  // The label column's index in `t` (-1: none), checked.
  int64_t label_column(const Table& t) const;
  // String labels' class indices (in `classes` order, or the file's labels sorted); empty when
  // the labels are numbers. Sets classes_used_.
  std::map<std::string, int64_t> class_indices(const Table& t, int64_t label) const;
  std::string fmt_fraction() const;
  // Throws CorruptionError naming the row of the first class index outside [0, num_classes)
  // that is not ignore_label.
  void check_labels(const Table& t, const std::vector<int64_t>& kept, const std::vector<int64_t>& labels,
                    const std::string& column) const;

  std::string path_, where_, label_where_;
  bool header_ = true;
  bool allow_non_finite_ = false;  // allow_non_finite: nan and inf cells kept
  std::string label_name_;
  std::optional<int64_t> label_index_;
  std::vector<std::string> classes_;  // `classes`
  std::string label_dtype_ = "auto";  // auto | int64 | float32
  std::optional<int64_t> num_classes_, ignore_label_;
  std::string split_ = "all";
  double test_fraction_ = 0.2;
  int64_t split_seed_ = 0;
  mutable std::vector<std::string> warnings_;
  mutable std::vector<std::string> classes_used_;  // the index order of string labels, once loaded
};

// The rows of one side of a split of `rows` rows: a Fisher-Yates shuffle seeded by `seed` (a
// sequence of its own, the same everywhere), the first round(test_fraction * rows) of it for
// test; in the file's order.
std::vector<int64_t> split_rows(int64_t rows, double test_fraction, uint64_t seed, bool test);

}  // namespace kd::data
