#include "trainer/cli/sweep.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "trainer/cli/launch.h"
#include "trainer/cli/sweep_internal.h"
#include "trainer/common/error.h"
#include "trainer/config/experiment.h"
#include "trainer/runtime/cores.h"

namespace kd::cli {
namespace {

namespace fs = std::filesystem;
using sweep_detail::Point;
using sweep_detail::point_command;
using sweep_detail::point_overrides;
using sweep_detail::run_points;

std::string value_text(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

// "learning_rate=0.001,seed=0": each key's last part (the whole key when two share it), its value;
// characters a file name should not hold become "_".
std::string point_name(const std::vector<std::pair<std::string, std::string>>& values) {
  std::map<std::string, int> last_parts;
  const auto last_part = [](const std::string& key) {
    const auto cut = key.find_last_of('.');
    return cut == std::string::npos ? key : key.substr(cut + 1);
  };
  for (const auto& [key, value] : values) ++last_parts[last_part(key)];
  std::string name;
  for (const auto& [key, value] : values) {
    if (!name.empty()) name += ",";
    name += (last_parts[last_part(key)] > 1 ? key : last_part(key)) + "=" + value;
  }
  if (name.empty()) name = "base";
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::strchr("._=,+-[]", c) == nullptr) c = '_';
  }
  if (name.size() > 120) name = name.substr(0, 100) + "-" + std::to_string(std::hash<std::string>{}(name) % 100000);
  return name;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The values of one --sweep.KEY argument: a YAML list of at least one value.
std::vector<std::string> axis_values(const std::string& key, const std::string& text) {
  YAML::Node list;
  try {
    list = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError("--sweep." + key + "=" + text + ": not valid YAML: " + e.msg);
  }
  if (!list.IsSequence() || list.size() == 0) {
    throw ConfigError("--sweep." + key + "=" + text + ": give a list of the values to sweep, e.g. --sweep." + key +
                      "=[1e-3,3e-3]");
  }
  std::vector<std::string> out;
  for (const auto& value : list) out.push_back(value_text(value));
  return out;
}

// The points a sweep file lists: a YAML list of maps of key: value.
std::vector<std::vector<std::pair<std::string, std::string>>> file_points(const std::string& file) {
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(file);
  } catch (const YAML::BadFile&) {
    throw IOError("cannot read the sweep file \"" + file + "\"");
  } catch (const YAML::Exception& e) {
    throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
  const auto where = [&](const YAML::Node& n) { return file + ":" + std::to_string(n.Mark().line + 1); };
  if (!doc.IsSequence() || doc.size() == 0) {
    throw ConfigError(file +
                      ": a sweep file is a list of points, each a map of key: value, e.g.\n"
                      "- {optimizer.learning_rate: 1e-3, seed: 0}\n- {optimizer.learning_rate: 3e-3, seed: 1}");
  }
  std::vector<std::vector<std::pair<std::string, std::string>>> out;
  for (const auto& point : doc) {
    if (!point.IsMap()) throw ConfigError(where(point) + ": each point is a map of key: value");
    std::vector<std::pair<std::string, std::string>> values;
    for (auto it = point.begin(); it != point.end(); ++it) {
      if (!it->first.IsScalar()) throw ConfigError(where(it->first) + ": a key is a dotted name, e.g. optimizer.type");
      values.emplace_back(it->first.Scalar(), value_text(it->second));
    }
    out.push_back(std::move(values));
  }
  return out;
}

bool sets_key(const std::vector<config::Override>& overrides, const std::string& key) {
  return std::any_of(overrides.begin(), overrides.end(), [&](const config::Override& o) { return o.first == key; });
}

void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path partial = path.string() + ".partial";
  {
    std::ofstream out(partial);
    out << text;
    if (!out.flush()) throw IOError("cannot write \"" + partial.string() + "\"");
  }
  fs::rename(partial, path);
}

nlohmann::ordered_json manifest(const std::string& cfg, const std::vector<config::Override>& base,
                                const std::vector<Point>& points) {
  nlohmann::ordered_json m;
  m["experiment"] = cfg;
  m["overrides"] = nlohmann::ordered_json::object();
  for (const auto& [key, value] : base) m["overrides"][key] = value;
  m["points"] = nlohmann::ordered_json::array();
  for (const Point& p : points) {
    nlohmann::ordered_json values = nlohmann::ordered_json::object();
    for (const auto& [key, value] : p.values) values[key] = value;
    m["points"].push_back({{"name", p.name}, {"workdir", p.workdir.filename().string()}, {"values", values}});
  }
  return m;
}

void write_sbatch(const SweepOptions& options, const std::vector<config::Override>& base,
                  const std::vector<Point>& points, const fs::path& dir) {
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# kd sweep: " << points.size() << " points of " << options.cfg << ", one array task each (" << dir.string()
    << "/sweep.json lists them).\n"
    << "# Submit: sbatch " << (dir / "sweep.sbatch").string() << "\n"
    << "# Add what your cluster needs (--time, --cpus-per-task, --mem, --partition) here or on sbatch's command line.\n"
    << "# A task that is requeued or rerun resumes its point from its checkpoints.\n"
    << "#SBATCH --job-name=kd-sweep\n"
    << "#SBATCH --chdir=" << fs::current_path().string() << "\n"
    << "#SBATCH --array=0-" << points.size() - 1 << "\n"
    << "#SBATCH --output=" << (dir / "logs").string() << "/slurm-%A_%a.txt\n"
    << "#SBATCH --open-mode=append\n"
    << "#SBATCH --requeue\n"
    << "set -euo pipefail\n"
    << "case \"${SLURM_ARRAY_TASK_ID:?run this script with sbatch}\" in\n";
  for (std::size_t i = 0; i < points.size(); ++i) {
    s << "  " << i << ")  # " << points[i].name << "\n    exec";
    for (const auto& a : point_command(options.program, options.cfg, point_overrides(base, points[i]), 0)) {
      s << " " << shell_quote(a);
    }
    s << " ;;\n";
  }
  s << "  *) echo \"kd sweep: no point $SLURM_ARRAY_TASK_ID (0 to " << points.size() - 1 << ")\" >&2; exit 2 ;;\n"
    << "esac\n";
  write_atomically(dir / "sweep.sbatch", s.str());
  fs::permissions(dir / "sweep.sbatch", fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
}

}  // namespace

int sweep(const SweepOptions& given) {
  SweepOptions options = given;
  if (options.program.empty()) options.program = self_executable();
  if (options.jobs < 1) throw ConfigError("--jobs must be >= 1");
  options.cfg = fs::absolute(options.cfg).lexically_normal().string();
  std::vector<std::string> rest;
  const std::vector<config::Override> base = config::parse_overrides(options.args, &rest);
  // --sweep.KEY=[...] (or --sweep.KEY [...]): the axes, in order.
  std::vector<std::pair<std::string, std::vector<std::string>>> axes;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    const std::string& a = rest[i];
    if (a.rfind("--sweep.", 0) != 0) {
      throw ConfigError("unexpected argument \"" + a +
                        "\" (kd sweep takes --cfg.KEY=VALUE for every point and --sweep.KEY=[VALUES] to vary)");
    }
    const auto eq = a.find('=');
    std::string key = a.substr(8, eq == std::string::npos ? std::string::npos : eq - 8), text;
    if (eq != std::string::npos) {
      text = a.substr(eq + 1);
    } else if (i + 1 < rest.size() && rest[i + 1].rfind("--", 0) != 0) {
      text = rest[++i];
    } else {
      throw ConfigError(a + ": give the values, e.g. " + a + "=[1,2]");
    }
    if (key.empty()) throw ConfigError(a + ": name the key to sweep, e.g. --sweep.seed=[0,1]");
    axes.emplace_back(key, axis_values(key, text));
  }
  std::vector<std::vector<std::pair<std::string, std::string>>> combos{{}};
  if (!options.sweep_file.empty()) combos = file_points(options.sweep_file);
  for (const auto& [key, values] : axes) {
    std::vector<std::vector<std::pair<std::string, std::string>>> next;
    for (const auto& combo : combos) {
      for (const auto& value : values) {
        auto extended = combo;
        extended.emplace_back(key, value);
        next.push_back(std::move(extended));
      }
    }
    combos = std::move(next);
  }
  if (axes.empty() && options.sweep_file.empty()) {
    throw ConfigError("nothing to sweep: give --sweep.KEY=[VALUES] (e.g. --sweep.seed=[0,1]) or --sweep-file=FILE");
  }

  // The sweep's directory, and each point checked as an experiment before anything runs.
  const config::Node experiment = config::load_experiment(options.cfg, base);
  if (options.dir.empty()) {
    if (!experiment.has("workdir")) {
      throw ConfigError(options.cfg + ": the experiment has no workdir; give the sweep's directory with --dir=DIR");
    }
    options.dir = experiment.get_string("workdir");
  }
  const fs::path dir = fs::absolute(options.dir).lexically_normal();
  std::vector<Point> points;
  std::set<std::string> names;
  for (const auto& combo : combos) {
    Point p{combo, point_name(combo), {}};
    for (const auto& [key, value] : combo) {
      if (key == "workdir")
        throw ConfigError("--sweep.workdir: the sweep gives each point its own workdir under --dir");
    }
    for (int k = 2; !names.insert(p.name).second; ++k) p.name = point_name(combo) + "-" + std::to_string(k);
    p.workdir = dir / p.name;
    p.values.emplace_back("workdir", p.workdir.string());
    try {
      config::load_experiment(options.cfg, point_overrides(base, p));
    } catch (Error& e) {
      e.add_context("sweep point " + p.name);
      throw;
    }
    points.push_back(std::move(p));
  }
  if (fs::exists(dir / "config.yaml")) {
    throw ConfigError(dir.string() +
                      " is the workdir of a run (it holds config.yaml), not a sweep's directory; give "
                      "another with --dir=DIR");
  }
  // The manifest lists the points without their workdir override (it is theirs by construction).
  std::vector<Point> listed = points;
  for (Point& p : listed) p.values.pop_back();
  const nlohmann::ordered_json m = manifest(options.cfg, base, listed);
  if (fs::exists(dir / "sweep.json")) {
    nlohmann::ordered_json existing;
    try {
      std::ifstream in(dir / "sweep.json");
      existing = nlohmann::ordered_json::parse(in);
    } catch (const nlohmann::ordered_json::exception& e) {
      throw ConfigError((dir / "sweep.json").string() + ": not a sweep manifest (" + e.what() +
                        "); give another --dir, or remove the file");
    }
    if (!existing.is_object() || existing.value("points", nlohmann::ordered_json()) != m["points"] ||
        existing.value("experiment", "") != options.cfg ||
        existing.value("overrides", nlohmann::ordered_json()) != m["overrides"]) {
      throw ConfigError(dir.string() +
                        " holds another sweep (its sweep.json lists other points, another experiment or other "
                        "--cfg overrides); nothing was changed. Give another --dir=DIR");
    }
  }
  fs::create_directories(dir / "logs");
  write_atomically(dir / "sweep.json", m.dump(1) + "\n");

  int64_t threads = 0;  // the points' intra-op threads: the cores shared, unless the experiment chooses
  const bool chosen =
      experiment.has("num_threads") || sets_key(base, "num_threads") ||
      std::any_of(axes.begin(), axes.end(), [](const auto& a) { return a.first == "num_threads"; }) ||
      std::any_of(listed.begin(), listed.end(), [](const Point& p) {
        return std::any_of(p.values.begin(), p.values.end(), [](const auto& v) { return v.first == "num_threads"; });
      });
  if (!chosen)
    threads = std::max<int64_t>(1, runtime::available_cores() / std::min<int64_t>(options.jobs, points.size()));

  if (options.slurm) {
    // #SBATCH lines are not a shell's: a space, '%' (SLURM's patterns) or a line break in a path
    // there would change what they say.
    for (const std::string& path : {dir.string(), fs::current_path().string(), options.cfg}) {
      if (path.find_first_of(" \t\n\r%") != std::string::npos) {
        throw ConfigError("--slurm: \"" + path +
                          "\" holds a space, a '%' or a line break, which an sbatch script's #SBATCH lines "
                          "cannot carry; use a directory (and experiment) path without them");
      }
    }
    write_sbatch(options, base, points, dir);
    std::cout << "kd sweep: wrote " << (dir / "sweep.sbatch").string() << ", an array job of " << points.size()
              << " tasks; submit it with: sbatch " << (dir / "sweep.sbatch").string() << "\n";
    return 0;
  }
  std::cout << "kd sweep: " << points.size() << " points in " << dir.string() << ", " << options.jobs << " at a time"
            << (threads > 0 ? ", " + std::to_string(threads) + " intra-op thread" + (threads == 1 ? "" : "s") + " each"
                            : std::string())
            << "\n";
  return run_points(options, base, points, dir, threads);
}

}  // namespace kd::cli
