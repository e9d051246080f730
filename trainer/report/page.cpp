// The report's HTML: the charts are drawn in the browser by report.js from the page's data (a
// JSON script element); the tables, the experiment and the images are written here.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "trainer/report/report_internal.h"

namespace kd::report {
namespace {

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", v);
  return buffer;
}

std::string with_thousands(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

// The series of every run, for report.js: {"runs": [{"name", "series": {collection: {tag:
// [[step, value], ...]}}}]}. JSON has no NaN: a non-finite value is the string "NaN", "inf" or
// "-inf" (report.js draws a gap).
std::string chart_data(const std::vector<RunData>& runs) {
  nlohmann::json data = {{"runs", nlohmann::json::array()}};
  for (const auto& run : runs) {
    nlohmann::json series = nlohmann::json::object();
    for (const auto& record : run.records) {
      for (const auto& [tag, value] : record.values) {
        nlohmann::json point = {record.step,
                                std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(number(value))};
        series[record.collection][tag].push_back(std::move(point));
      }
    }
    data["runs"].push_back({{"name", run.name}, {"series", std::move(series)}});
  }
  // Names that are not UTF-8 (a workdir's folder) get U+FFFD rather than an error.
  std::string text = data.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
  // Inside a <script> element no "<" may appear (not "</script>", not "<!--"): in JSON it can only
  // be within a string, where \u003c is the same character.
  for (size_t at = text.find('<'); at != std::string::npos; at = text.find('<', at)) text.replace(at, 1, "\\u003c");
  return text;
}

// Per collection, each tag's last logged value and its step.
std::string latest_table(const RunData& run) {
  std::map<std::string, std::map<std::string, std::pair<int64_t, double>>> latest;
  for (const auto& record : run.records) {
    for (const auto& [tag, value] : record.values) {
      auto [it, fresh] = latest[record.collection].try_emplace(tag, record.step, value);
      if (!fresh && record.step >= it->second.first) it->second = {record.step, value};  // the highest step's
    }
  }
  if (latest.empty()) return "<p class=\"note\">nothing logged yet</p>\n";
  std::string html;
  for (const auto& [collection, tags] : latest) {
    html += "<table class=\"latest\"><caption>" + escape(collection) +
            "</caption>\n<tr><th>tag</th><th>value</th><th>step</th></tr>\n";
    for (const auto& [tag, at] : tags) {
      html += "<tr><td>" + escape(tag) + "</td><td class=\"num\">" + number(at.second) + "</td><td class=\"num\">" +
              std::to_string(at.first) + "</td></tr>\n";
    }
    html += "</table>\n";
  }
  return html;
}

// The points of a sweep side by side: each one's values and its last losses and metrics, in a
// table sorted by a click on a column's head (report.js).
std::string sweep_table(const std::vector<RunData>& runs) {
  std::vector<std::string> keys;  // the swept keys, in the sweep's order
  std::set<std::string> columns;  // "collection/tag" of every last loss and metric
  std::vector<std::map<std::string, double>> last(runs.size());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    for (const auto& [key, value] : runs[i].sweep_values) {
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
    std::map<std::string, int64_t> steps;
    for (const auto& record : runs[i].records) {
      for (const auto& [tag, value] : record.values) {
        if (tag.rfind("losses/", 0) != 0 && tag.rfind("metrics/", 0) != 0) continue;
        const std::string column = record.collection + "/" + tag;
        columns.insert(column);
        if (auto [it, fresh] = steps.try_emplace(column, record.step); fresh || record.step >= it->second) {
          it->second = record.step;
          last[i][column] = value;
        }
      }
    }
  }
  if (keys.empty()) return "";
  std::string html =
      "<section id=\"kd-sweep\">\n<h2>sweep</h2>\n<table class=\"sweep kd-sortable\">\n<tr><th>point</th>";
  for (const auto& key : keys) html += "<th>" + escape(key) + "</th>";
  for (const auto& column : columns) html += "<th>" + escape(column) + "</th>";
  html += "</tr>\n";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    html += "<tr><td>" + escape(runs[i].name) + "</td>";
    for (const auto& key : keys) {
      std::string value;
      for (const auto& [k, v] : runs[i].sweep_values) value = k == key ? v : value;
      html += "<td>" + escape(value) + "</td>";
    }
    for (const auto& column : columns) {
      const auto it = last[i].find(column);
      html += it == last[i].end() ? "<td></td>" : "<td class=\"num\">" + number(it->second) + "</td>";
    }
    html += "</tr>\n";
  }
  return html + "</table>\n<p class=\"hint\">click a column's head to sort by it</p>\n</section>\n";
}

std::string model_table(const RunData& run) {
  if (run.model.empty()) return "<p class=\"note\">no checkpoint yet: the model table comes from one</p>\n";
  int64_t total = 0;
  std::string rows;
  for (const auto& p : run.model) {
    total += p.numel;
    rows += "<tr><td>" + escape(p.name) + "</td><td>" + escape(p.tensor) + "</td><td class=\"num\">" +
            with_thousands(p.numel) + "</td></tr>\n";
  }
  return "<table class=\"model\"><caption>params" +
         (run.model_step ? " (checkpoint of step " + std::to_string(*run.model_step) + ")" : std::string()) +
         "</caption>\n<tr><th>name</th><th>tensor</th><th>size</th></tr>\n" + rows +
         "<tr class=\"total\"><td>total</td><td></td><td class=\"num\">" + with_thousands(total) +
         "</td></tr>\n</table>\n";
}

std::string images(const std::vector<RunData>& runs) {
  std::string html;
  for (const auto& run : runs) {
    for (const auto& image : run.images) {
      const std::string caption = (runs.size() > 1 ? run.name + " · " : std::string()) + image.collection + " · " +
                                  image.tag + " · step " + std::to_string(image.step);
      html += "<figure><img alt=\"" + escape(caption) + "\" src=\"data:image/png;base64," + base64(image.png) +
              "\"><figcaption>" + escape(caption) + "</figcaption></figure>\n";
    }
  }
  return html.empty() ? "<p class=\"note\">no image summaries (they are read from the TensorBoard files: "
                        "writer.tensorboard, and a ShowImages summary)</p>\n"
                      : "<div class=\"images\">\n" + html + "</div>\n";
}

std::string now_utc() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buffer;
}

}  // namespace

std::string base64(const std::string& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t n =
        (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) | uint8_t(bytes[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(n >> shift) & 63];
  }
  if (i < bytes.size()) {
    const bool two = i + 1 < bytes.size();
    const uint32_t n = (uint32_t(uint8_t(bytes[i])) << 16) | (two ? uint32_t(uint8_t(bytes[i + 1])) << 8 : 0);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += two ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string render_page(const std::vector<RunData>& runs) {
  std::string names;
  for (const auto& run : runs) names += (names.empty() ? "" : ", ") + run.name;
  std::string html = std::string(kMarker) + "\n<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  html += "<title>kd report: " + escape(names) + "</title>\n";
  html += "<style>\n" + std::string(kDygraphsCss) + "\n</style>\n<style>\n" + std::string(kReportCss) + "\n</style>\n";
  html += "</head>\n<body>\n<header>\n<h1>kd report</h1>\n<p>" + escape(names) + " · written " + now_utc() + "</p>\n";
  html +=
      "<div class=\"controls\"><label>smoothing <input id=\"kd-smoothing\" type=\"range\" min=\"1\" max=\"100\" "
      "value=\"1\"> <span id=\"kd-smoothing-value\">1</span> points</label> <label><input id=\"kd-log\" "
      "type=\"checkbox\"> log scale</label> <span class=\"hint\">drag across a chart to zoom, double-click to "
      "reset</span></div>\n</header>\n<main>\n";
  html += sweep_table(runs);
  html += "<section id=\"kd-charts\"></section>\n";
  html += "<section id=\"kd-latest\">\n<h2>latest values</h2>\n";
  for (const auto& run : runs)
    html += (runs.size() > 1 ? "<h3>" + escape(run.name) + "</h3>\n" : "") + latest_table(run);
  html += "</section>\n<section id=\"kd-images\">\n<h2>images</h2>\n" + images(runs) + "</section>\n";
  html += "<section id=\"kd-runs\">\n<h2>experiment and model</h2>\n";
  for (const auto& run : runs) {
    html += "<details open>\n<summary>" + escape(run.name) + " <span class=\"path\">" + escape(run.workdir) +
            "</span></summary>\n" + model_table(run);
    html += run.experiment.empty() ? "<p class=\"note\">no config.yaml</p>\n"
                                   : "<pre class=\"experiment\">" + escape(run.experiment) + "</pre>\n";
    for (const auto& note : run.notes) html += "<p class=\"note\">" + escape(note) + "</p>\n";
    html += "</details>\n";
  }
  html += "</section>\n</main>\n";
  html += "<script type=\"application/json\" id=\"kd-data\">" + chart_data(runs) + "</script>\n";
  html +=
      "<script>\n" + std::string(kDygraphsJs) + "\n</script>\n<script>\n" + std::string(kReportJs) + "\n</script>\n";
  html += "</body>\n</html>\n";
  return html;
}

}  // namespace kd::report
