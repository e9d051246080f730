#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/common/error.h"
#include "trainer/io/file_system.h"
#include "trainer/writers/writer.h"

namespace kd::writers {

JsonlWriter::JsonlWriter(const std::string& path) : path_(path), out_(path, std::ios::app) {
  if (!out_) throw IOError("cannot open \"" + path + "\" for writing");
}

void JsonlWriter::write_scalars(int64_t step, const std::string& collection, const Scalars& values) {
  nlohmann::ordered_json record;
  record["step"] = step;
  record["collection"] = collection;
  for (const auto& [name, value] : values) {
    // JSON has no NaN or infinity: write them as null so every line stays parseable.
    if (std::isfinite(value)) {
      record[name] = value;
    } else {
      record[name] = nullptr;
    }
  }
  if (!replace_) {
    out_ << record.dump() << '\n';
    out_.flush();
    if (!out_) throw IOError("writing \"" + path_ + "\" failed (disk full?)");
    return;
  }
  out_.close();
  std::ifstream in(path_);
  std::vector<std::string> lines;
  std::size_t insert_at = 0;  // after the last record of a step <= `step`
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      const int64_t s = j.at("step").get<int64_t>();
      if (s == step && j.value("collection", "") == collection) continue;  // replaced
      lines.push_back(line);
      if (s <= step) insert_at = lines.size();
    } catch (const nlohmann::json::exception&) {
      lines.push_back(line);  // not kd's: kept where it was
    }
  }
  in.close();
  lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(insert_at), record.dump());
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  io::write_file_atomically(*io::posix_file_system(), path_, text);
  out_.open(path_, std::ios::app);
  if (!out_) throw IOError("cannot open \"" + path_ + "\" for writing");
}

void JsonlWriter::flush() { out_.flush(); }

void JsonlWriter::truncate_after(int64_t step) {
  out_.close();
  std::ifstream in(path_);
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).at("step").get<int64_t>() <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // A torn last line of a killed run: dropped (its step is logged again).
    }
  }
  in.close();
  io::write_file_atomically(*io::posix_file_system(), path_, kept);
  out_.open(path_, std::ios::app);
  if (!out_) throw IOError("cannot open \"" + path_ + "\" for writing");
}

std::vector<JsonlRecord> read_jsonl(const std::string& path, bool* torn_tail) {
  std::ifstream in(path);
  if (!in) throw IOError("cannot read \"" + path + "\"");
  if (torn_tail) *torn_tail = false;
  std::vector<JsonlRecord> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    if (torn_tail && in.eof()) {  // the last line, without its newline: a writer was stopped within it
      try {
        [[maybe_unused]] const auto parsed = nlohmann::ordered_json::parse(line);
      } catch (const nlohmann::json::exception&) {
        *torn_tail = true;
        break;
      }
    }
    try {
      const auto j = nlohmann::ordered_json::parse(line);
      JsonlRecord r{j.at("step").get<int64_t>(), j.at("collection").get<std::string>(), {}};
      for (const auto& [k, v] : j.items()) {
        if (k == "step" || k == "collection") continue;
        r.values.emplace_back(k, v.is_null() ? std::nan("") : v.get<double>());
      }
      out.push_back(std::move(r));
    } catch (const nlohmann::json::exception& e) {
      throw CorruptionError(path + ":" + std::to_string(line_no) + ": not a metrics record: " + e.what());
    }
  }
  return out;
}

}  // namespace kd::writers
