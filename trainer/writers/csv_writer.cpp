#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "trainer/common/error.h"
#include "trainer/io/file_system.h"
#include "trainer/writers/writer.h"

namespace kd::writers {
namespace {

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream s(line);
  for (std::string cell; std::getline(s, cell, ',');) out.push_back(cell);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

}  // namespace

CsvWriter::Table& CsvWriter::table(const std::string& collection) {
  auto it = tables_.find(collection);
  if (it != tables_.end()) return it->second;
  Table t;
  std::ifstream in(path(collection));  // a resumed run continues the file
  std::string line;
  if (std::getline(in, line)) {
    auto header = split(line);
    if (!header.empty()) t.columns.assign(header.begin() + 1, header.end());
    while (std::getline(in, line)) {
      if (!line.empty()) t.rows.push_back(split(line));
    }
  }
  return tables_.emplace(collection, std::move(t)).first->second;
}

void CsvWriter::rewrite(const std::string& collection, const Table& t) const {
  std::string text = "step";
  for (const auto& c : t.columns) text += "," + c;
  text += "\n";
  for (const auto& row : t.rows) {
    for (std::size_t i = 0; i <= t.columns.size(); ++i) text += (i ? "," : "") + (i < row.size() ? row[i] : "");
    text += "\n";
  }
  io::write_file_atomically(*io::posix_file_system(), path(collection), text);
}

void CsvWriter::write_scalars(int64_t step, const std::string& collection, const Scalars& values) {
  Table& t = table(collection);
  bool new_column = t.rows.empty() && t.columns.empty();
  for (const auto& [name, v] : values) {
    if (std::find(t.columns.begin(), t.columns.end(), name) == t.columns.end()) {
      t.columns.push_back(name);
      new_column = true;
    }
  }
  std::vector<std::string> row(t.columns.size() + 1);
  row[0] = std::to_string(step);
  for (const auto& [name, v] : values) {
    const auto at = std::find(t.columns.begin(), t.columns.end(), name) - t.columns.begin();
    row[static_cast<std::size_t>(at) + 1] =
        std::isfinite(v) ? fmt::format("{}", v) : (std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"));
  }
  if (replace_) {
    // The row of the same step replaced, the new one after the last of a step <= `step`.
    const auto step_of = [](const std::vector<std::string>& r) {
      char* end = nullptr;
      const long long s = r.empty() ? 0 : std::strtoll(r[0].c_str(), &end, 10);
      return !r.empty() && end && *end == '\0' ? std::optional<int64_t>(s) : std::nullopt;
    };
    std::erase_if(t.rows, [&](const auto& r) { return step_of(r) == step; });
    auto at = t.rows.begin();
    for (auto it = t.rows.begin(); it != t.rows.end(); ++it) {
      if (const auto s = step_of(*it); s && *s <= step) at = it + 1;
    }
    t.rows.insert(at, row);
    rewrite(collection, t);
    return;
  }
  t.rows.push_back(row);
  if (new_column) {
    rewrite(collection, t);
    return;
  }
  std::ofstream out(path(collection), std::ios::app);
  for (std::size_t i = 0; i < row.size(); ++i) out << (i ? "," : "") << row[i];
  out << "\n";
  if (!out) throw IOError("writing \"" + path(collection) + "\" failed (disk full?)");
}

void CsvWriter::truncate_after(int64_t step) {
  for (const auto& entry : std::filesystem::directory_iterator(workdir_)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("metrics_", 0) != 0 || entry.path().extension() != ".csv") continue;
    const std::string collection = name.substr(8, name.size() - 8 - 4);
    Table& t = table(collection);
    std::vector<std::vector<std::string>> kept;
    for (auto& row : t.rows) {
      char* end = nullptr;
      const long long row_step = row.empty() ? 0 : std::strtoll(row[0].c_str(), &end, 10);
      if (!row.empty() && end && *end == '\0' && row_step <= step) kept.push_back(std::move(row));  // torn rows dropped
    }
    t.rows = std::move(kept);
    rewrite(collection, t);
  }
}

}  // namespace kd::writers
