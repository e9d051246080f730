// The Csv data source: a table of a user's own, a row per example.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/data/csv_source_internal.h"
#include "trainer/data/index_shuffle.h"

namespace kd::data {
namespace {

// A cell without surrounding blanks or double quotes.
std::string trim(const std::string& cell) {
  const auto first = cell.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  std::string out = cell.substr(first, cell.find_last_not_of(" \t") - first + 1);
  if (out.size() >= 2 && out.front() == '"' && out.back() == '"') out = out.substr(1, out.size() - 2);
  return out;
}

std::vector<std::string> cells_of(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream s(line);
  for (std::string cell; std::getline(s, cell, ',');) cells.push_back(trim(cell));
  if (!line.empty() && line.back() == ',') cells.emplace_back();  // an empty last cell
  return cells;
}

// A number that fills the whole cell (std::stof accepts "1.5abc").
bool parse_number(const std::string& cell, float& value) {
  if (cell.empty()) return false;
  try {
    std::size_t used = 0;
    value = std::stof(cell, &used);
    return used == cell.size();
  } catch (const std::exception&) {
    return false;
  }
}

// splitmix64: the same sequence on every machine and LibTorch version (a split must not change
// with either).
uint64_t next_random(uint64_t& state) {
  const uint64_t out = mix_bits(state);  // splitmix64's output for the state advanced once
  state += 0x9E3779B97F4A7C15ull;
  return out;
}

}  // namespace

std::vector<int64_t> split_rows(int64_t rows, double test_fraction, uint64_t seed, bool test) {
  std::vector<int64_t> order(static_cast<std::size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) order[static_cast<std::size_t>(i)] = i;
  uint64_t state = seed;
  for (int64_t i = rows - 1; i > 0; --i) {  // Fisher-Yates
    const auto j = static_cast<int64_t>(next_random(state) % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  const auto n_test = static_cast<int64_t>(std::llround(test_fraction * static_cast<double>(rows)));
  std::vector<int64_t> out(test ? order.begin() : order.begin() + n_test, test ? order.begin() + n_test : order.end());
  std::sort(out.begin(), out.end());  // the file's order
  return out;
}

CsvSource::CsvSource(const config::Node& o)
    : path_(o.get_string("path")),
      where_(o.child("path").where()),
      header_(o.get_bool("header", true)),
      allow_non_finite_(o.get_bool("allow_non_finite", false)) {
  if (auto label = o.find("label_column"); label && !label->is_null()) {
    label_where_ = label->where();
    const std::string text = label->as_string();
    const bool is_index = !text.empty() && text.find_first_not_of("-0123456789") == std::string::npos &&
                          text.find('-', 1) == std::string::npos && text != "-";
    if (is_index) {
      label_index_ = label->as_int();
    } else {
      label_name_ = text;
      if (!header_) {
        throw ConfigError(label_where_ + ": label_column \"" + text +
                          "\" names a column of the header, but header is false; give its index (0 is the first)");
      }
    }
  }
  if (auto classes = o.find("classes"); classes && !classes->is_null()) {
    classes_ = o.get_string_list("classes");
    std::set<std::string> unique(classes_.begin(), classes_.end());
    if (unique.size() != classes_.size() || classes_.empty()) {
      throw ConfigError(classes->where() + ": classes must list each label once");
    }
    if (!label_index_ && label_name_.empty()) throw ConfigError(classes->where() + ": classes needs a label_column");
  }
  label_dtype_ = o.get_string("label_dtype", "auto");
  if (label_dtype_ != "auto" && label_dtype_ != "int64" && label_dtype_ != "float32") {
    throw ConfigError(o.child("label_dtype").where() + ": label_dtype must be auto, int64 or float32, got \"" +
                      label_dtype_ + "\"");
  }
  if (o.has("num_classes") && !o.child("num_classes").is_null()) {
    num_classes_ = o.get_int_in("num_classes", std::nullopt, 1, int64_t{1} << 31);
  }
  if (auto ignore = o.find("ignore_label"); ignore && !ignore->is_null()) ignore_label_ = ignore->as_int();
  for (const char* key : {"label_dtype", "num_classes", "ignore_label"}) {
    if (o.has(key) && !label_index_ && label_name_.empty()) {
      throw ConfigError(o.child(key).where() + ": " + key + " is about the label column; set label_column too");
    }
  }
  if (label_dtype_ == "float32" && (num_classes_ || ignore_label_ || !classes_.empty())) {
    throw ConfigError(o.child("label_dtype").where() +
                      ": label_dtype: float32 labels are values, not classes; leave out num_classes, ignore_label "
                      "and classes");
  }
  if (num_classes_ && !classes_.empty() && static_cast<int64_t>(classes_.size()) > *num_classes_) {
    throw ConfigError(o.child("num_classes").where() + ": classes lists " + std::to_string(classes_.size()) +
                      " labels, more than num_classes: " + std::to_string(*num_classes_));
  }
  split_ = o.get_string("split", "all");
  if (split_ != "all" && split_ != "train" && split_ != "test") {
    throw ConfigError(o.child("split").where() + ": split must be all, train or test, got \"" + split_ + "\"");
  }
  test_fraction_ = o.get_double_in("test_fraction", 0.2, 0.0, 1.0);
  split_seed_ = o.get_int_in("split_seed", 0, 0, std::numeric_limits<int64_t>::max());
  if (split_ == "all" && (o.has("test_fraction") || o.has("split_seed"))) {
    throw ConfigError(o.where() + ": test_fraction and split_seed divide the file for split: train or split: test");
  }
}

CsvSource::Table CsvSource::read_table() const {
  std::ifstream in(path_);
  if (!in) throw IOError(where_ + ": cannot read the CSV file \"" + path_ + "\"");
  Table t;
  std::string line;
  int64_t header_line = 0;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();                 // a file with Windows line ends
    if (line_no == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // a UTF-8 byte-order mark
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::vector<std::string> cells = cells_of(line);
    if (header_ && t.names.empty()) {
      t.names = std::move(cells);
      header_line = line_no;
      continue;
    }
    const std::size_t expected = !t.names.empty()  ? t.names.size()
                                 : !t.rows.empty() ? t.rows.front().size()
                                                   : cells.size();
    if (cells.size() != expected) {
      throw CorruptionError(
          path_ + ":" + std::to_string(line_no) + ": " + std::to_string(cells.size()) + " columns, but " +
          (t.names.empty() ? "the first row has " : "the header (line " + std::to_string(header_line) + ") names ") +
          std::to_string(expected) + "; every row needs one cell per column");
    }
    t.rows.push_back(std::move(cells));
    t.line_of.push_back(line_no);
  }
  if (t.rows.empty()) throw CorruptionError("\"" + path_ + "\" holds no rows" + (header_ ? " below its header" : ""));
  return t;
}

int64_t CsvSource::label_column(const Table& t) const {
  const auto columns = static_cast<int64_t>(t.rows.front().size());
  int64_t label = -1;
  if (!label_name_.empty()) {
    const auto it = std::find(t.names.begin(), t.names.end(), label_name_);
    if (it == t.names.end()) {
      const auto close = nearest(label_name_, t.names, 1);
      throw ConfigError(label_where_ + ": \"" + path_ + "\" has no column \"" + label_name_ + "\"" +
                        (close.empty() ? "" : ". Did you mean \"" + close.front() + "\"?") +
                        " (its header names: " + join_names(t.names) + ")");
    }
    label = it - t.names.begin();
  } else if (label_index_) {
    label = *label_index_ < 0 ? columns + *label_index_ : *label_index_;
    if (label < 0 || label >= columns) {
      throw ConfigError(label_where_ + ": label_column " + std::to_string(*label_index_) + " is outside the " +
                        std::to_string(columns) + " columns of \"" + path_ + "\" (0 is the first, -1 the last)");
    }
  }
  if (columns - (label >= 0 ? 1 : 0) < 1) {
    throw ConfigError(where_ + ": \"" + path_ + "\" has no feature column besides the label column");
  }
  return label;
}

std::map<std::string, int64_t> CsvSource::class_indices(const Table& t, int64_t label) const {
  // String labels: class indices in `classes` order, or in sorted order of the file's labels
  // (the same for any order of the rows, and for both splits of one file).
  float unused = 0;
  bool string_labels = !classes_.empty();
  if (label >= 0 && !string_labels) {
    for (const auto& row : t.rows) string_labels = string_labels || !parse_number(row[label], unused);
  }
  std::map<std::string, int64_t> class_index;
  if (!string_labels) return class_index;
  std::vector<std::string> order = classes_;
  if (order.empty()) {
    std::set<std::string> seen;
    for (const auto& row : t.rows) seen.insert(row[label]);
    order.assign(seen.begin(), seen.end());
  }
  for (std::size_t i = 0; i < order.size(); ++i) class_index[order[i]] = static_cast<int64_t>(i);
  classes_used_ = order;
  return class_index;
}

Tree CsvSource::load() const {
  const Table t = read_table();
  const auto columns = static_cast<int64_t>(t.rows.front().size());
  const auto column_name = [&](int64_t c) {
    const std::string index = "index " + std::to_string(c);
    return t.names.empty() || t.names[c].empty() ? "column " + index : "column \"" + t.names[c] + "\" (" + index + ")";
  };
  const int64_t label = label_column(t);
  // pandas' to_csv writes its index as a first column without a name.
  warnings_.clear();
  if (!t.names.empty() && t.names.front().empty() && label != 0) {
    warnings_.push_back(path_ +
                        ": the first column has no name (pandas' index, written by to_csv without "
                        "index=False?); it is read as a feature");
  }
  const std::map<std::string, int64_t> class_index = class_indices(t, label);
  const bool string_labels = !class_index.empty() || !classes_.empty();
  const auto rows = static_cast<int64_t>(t.rows.size());
  const std::vector<int64_t> kept =
      split_ == "all" ? split_rows(rows, 0.0, 0, false)
                      : split_rows(rows, test_fraction_, static_cast<uint64_t>(split_seed_), split_ == "test");
  if (kept.empty()) {
    throw ConfigError(where_ + ": split " + split_ + " of \"" + path_ + "\" holds no rows (" + std::to_string(rows) +
                      " rows, test_fraction " + std::to_string(test_fraction_) + ")");
  }
  std::vector<float> features, labels;
  std::vector<int64_t> class_labels;
  features.reserve(kept.size() * static_cast<std::size_t>(columns));
  for (const int64_t r : kept) {
    const auto& row = t.rows[static_cast<std::size_t>(r)];
    const std::string at = path_ + ":" + std::to_string(t.line_of[static_cast<std::size_t>(r)]) + ": ";
    for (int64_t c = 0; c < columns; ++c) {
      const std::string& cell = row[static_cast<std::size_t>(c)];
      if (c == label && string_labels) {
        const auto it = class_index.find(cell);
        if (it == class_index.end()) {
          throw CorruptionError(at + column_name(c) + ": the label \"" + cell + "\" is not one of classes (" +
                                join_names(classes_used_) + ")");
        }
        class_labels.push_back(it->second);
        continue;
      }
      float v = 0;
      if (!parse_number(cell, v)) {
        throw CorruptionError(at + column_name(c) +
                              (cell.empty() ? " is empty" : " is not a number: \"" + cell + "\"") +
                              "; every feature cell needs a number");
      }
      if (!std::isfinite(v) && !allow_non_finite_) {
        throw CorruptionError(at + column_name(c) + " is \"" + cell +
                              "\", not a finite number; drop or fill the row (or set allow_non_finite: true)");
      }
      (c == label ? labels : features).push_back(v);
    }
  }
  const auto n = static_cast<int64_t>(kept.size());
  Tree out = Tree::dict({{"features", torch::tensor(features).reshape({n, columns - (label >= 0 ? 1 : 0)})}});
  if (string_labels) {
    out.insert("label", torch::tensor(class_labels, torch::kLong));
  } else if (label >= 0) {
    torch::Tensor l = torch::tensor(labels);
    const bool whole = torch::equal(l, l.round());
    if (label_dtype_ == "int64" && !whole) {
      const int64_t i = l.ne(l.round()).nonzero()[0].item<int64_t>();
      throw CorruptionError(path_ + ":" + std::to_string(t.line_of[static_cast<std::size_t>(kept[i])]) + ": " +
                            column_name(label) + " is " +
                            t.rows[static_cast<std::size_t>(kept[i])][static_cast<std::size_t>(label)] +
                            ", not a whole number, but label_dtype is int64 (class indices)");
    }
    if (label_dtype_ == "float32" || !whole) {
      out.insert("label", l);
    } else {
      l = l.to(torch::kLong);
      check_labels(t, kept, std::vector<int64_t>(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel()),
                   column_name(label));
      out.insert("label", l);
    }
  }
  return out;
}

void CsvSource::check_labels(const Table& t, const std::vector<int64_t>& kept, const std::vector<int64_t>& labels,
                             const std::string& column) const {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const int64_t v = labels[i];
    if ((v >= 0 && (!num_classes_ || v < *num_classes_)) || (ignore_label_ && v == *ignore_label_)) continue;
    std::string message = path_ + ":" + std::to_string(t.line_of[static_cast<std::size_t>(kept[i])]) + ": " + column +
                          " is " + std::to_string(v) + ", not a class index in [0, " +
                          (num_classes_ ? std::to_string(*num_classes_) : std::string("inf")) + ")";
    if (v < 0) {
      message += "; a label to leave out (PyTorch's -100) needs ignore_label: " + std::to_string(v) +
                 " here and ignore_index: " + std::to_string(v) +
                 " on the loss and metrics; a regression target needs label_dtype: float32";
    } else {
      message += " (num_classes: " + std::to_string(*num_classes_) + "); fix the row or num_classes";
    }
    throw CorruptionError(message);
  }
}

std::string CsvSource::describe() const {
  std::string out = "Csv " + path_;
  if (split_ != "all") out += " (split " + split_ + ", test_fraction " + fmt_fraction() + ")";
  if (!classes_used_.empty()) {
    out += ", classes";
    for (std::size_t i = 0; i < classes_used_.size(); ++i) {
      out.append(i ? ", " : " ").append(classes_used_[i]).append("=").append(std::to_string(i));
    }
  }
  return out;
}

std::string CsvSource::fmt_fraction() const {
  std::ostringstream s;
  s << test_fraction_ << ", split_seed " << split_seed_;
  return s.str();
}

}  // namespace kd::data
