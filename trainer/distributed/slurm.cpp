// A job's place from SLURM's variables, for ranks started by `srun` without a wrapper script.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/distributed/distributed.h"

namespace kd::distributed {
namespace {

const char* slurm_env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

int slurm_int(const char* name, const char* value) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < 0 || v > 1'000'000) {
    throw ConfigError(std::string("SLURM's variable ") + name + "=\"" + value + "\" is not a non-negative integer");
  }
  return static_cast<int>(v);
}

// Splits at the commas outside brackets: "a[1,3],b" -> "a[1,3]", "b".
std::vector<std::string> split_top_level(const std::string& list, const std::string& what) {
  std::vector<std::string> parts;
  std::string part;
  int depth = 0;
  for (char c : list) {
    if (c == '[') ++depth;
    if (c == ']' && --depth < 0) throw ConfigError(what + ": a \"]\" without its \"[\" in \"" + list + "\"");
    if (c == ',' && depth == 0) {
      parts.push_back(part);
      part.clear();
    } else {
      part += c;
    }
  }
  if (depth != 0) throw ConfigError(what + ": a \"[\" without its \"]\" in \"" + list + "\"");
  parts.push_back(part);
  return parts;
}

// The hosts of one entry ("rack[1-2]-n[01,03]"), the last bracket varying fastest.
void expand_entry(const std::string& entry, std::size_t from, const std::string& prefix, std::vector<std::string>& out,
                  std::size_t limit, const std::string& what) {
  if (out.size() >= limit) return;
  const auto open = entry.find('[', from);
  if (open == std::string::npos) {
    out.push_back(prefix + entry.substr(from));
    return;
  }
  const auto close = entry.find(']', open);
  const std::string head = prefix + entry.substr(from, open - from);
  for (const std::string& range : split_top_level(entry.substr(open + 1, close - open - 1), what)) {
    const auto dash = range.find('-');
    const std::string first = range.substr(0, dash);
    const std::string last = dash == std::string::npos ? first : range.substr(dash + 1);
    const auto digits = [](const std::string& s) {
      return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!digits(first) || !digits(last) || std::stol(last) < std::stol(first)) {
      throw ConfigError(what + ": \"" + range + "\" in \"" + entry + "\" is not a number or a range N-M");
    }
    const std::size_t width = first.size();  // "01-04": zero-padded to the first's width
    for (long n = std::stol(first); n <= std::stol(last) && out.size() < limit; ++n) {
      std::string number = std::to_string(n);
      if (number.size() < width) number.insert(0, width - number.size(), '0');
      expand_entry(entry, close + 1, head + number, out, limit, what);
    }
  }
}

// Tasks per node from SLURM_TASKS_PER_NODE ("2(x3),1": 2, 2, 2, 1).
std::vector<int> tasks_per_node(const std::string& text) {
  std::vector<int> out;
  for (const std::string& part : split_top_level(text, "SLURM_TASKS_PER_NODE")) {
    const auto paren = part.find("(x");
    const int n = slurm_int("SLURM_TASKS_PER_NODE", part.substr(0, paren).c_str());
    int times = 1;
    if (paren != std::string::npos) {
      times = slurm_int("SLURM_TASKS_PER_NODE", part.substr(paren + 2, part.size() - paren - 3).c_str());
    }
    for (int i = 0; i < times && out.size() < 100'000; ++i) out.push_back(n);
  }
  return out;
}

}  // namespace

std::vector<std::string> expand_hostlist(const std::string& list, std::size_t limit) {
  std::vector<std::string> hosts;
  const std::string what = "the SLURM host list";
  for (const std::string& entry : split_top_level(list, what)) {
    if (entry.empty()) continue;
    expand_entry(entry, 0, "", hosts, limit, what);
    if (hosts.size() >= limit) break;
  }
  return hosts;
}

std::optional<WorldInfo> world_from_slurm() {
  // An srun step sets the SLURM_STEP_* variables; a batch script run directly has only the
  // job's, whose task count is the allocation's, not the processes running.
  const char* procid = slurm_env("SLURM_PROCID");
  const char* ntasks = slurm_env("SLURM_STEP_NUM_TASKS");
  if (ntasks == nullptr) ntasks = slurm_env("SLURM_NTASKS");
  if (procid == nullptr || ntasks == nullptr) return std::nullopt;
  WorldInfo w;
  w.world_size = slurm_int(slurm_env("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS", ntasks);
  if (w.world_size <= 1) return std::nullopt;
  w.rank = slurm_int("SLURM_PROCID", procid);
  if (w.rank >= w.world_size) {
    throw ConfigError("SLURM_PROCID=" + std::to_string(w.rank) + " is not below the task count " +
                      std::to_string(w.world_size));
  }
  w.local_rank = slurm_env("SLURM_LOCALID") ? slurm_int("SLURM_LOCALID", slurm_env("SLURM_LOCALID")) : 0;
  w.local_world_size = 1;
  const char* per_node = slurm_env("SLURM_STEP_TASKS_PER_NODE");
  if (per_node == nullptr) per_node = slurm_env("SLURM_TASKS_PER_NODE");
  if (per_node != nullptr) {
    const std::vector<int> counts = tasks_per_node(per_node);
    const int node = slurm_env("SLURM_NODEID") ? slurm_int("SLURM_NODEID", slurm_env("SLURM_NODEID")) : 0;
    if (node < static_cast<int>(counts.size())) w.local_world_size = std::max(1, counts[node]);
  }
  w.local_world_size = std::max(w.local_world_size, w.local_rank + 1);
  const char* job = slurm_env("SLURM_JOB_ID");
  if (const char* addr = slurm_env("MASTER_ADDR")) {
    w.master_addr = addr;
  } else {
    const char* nodes = slurm_env("SLURM_STEP_NODELIST");
    if (nodes == nullptr) nodes = slurm_env("SLURM_JOB_NODELIST");
    if (nodes == nullptr) nodes = slurm_env("SLURM_NODELIST");
    if (nodes == nullptr) {
      throw ConfigError("SLURM sets " + std::to_string(w.world_size) +
                        " tasks but no node list (SLURM_JOB_NODELIST); set MASTER_ADDR to rank 0's host");
    }
    const std::vector<std::string> first = expand_hostlist(nodes, 1);
    if (first.empty()) throw ConfigError(std::string("SLURM's node list \"") + nodes + "\" names no host");
    w.master_addr = first.front();
  }
  if (const char* port = slurm_env("MASTER_PORT")) {
    w.master_port = slurm_int("MASTER_PORT", port);
  } else if (job != nullptr) {
    // Lightning's choice: 15000 and the job id's last four digits, the same on every node.
    const std::string id(job);
    const std::string tail = id.size() > 4 ? id.substr(id.size() - 4) : id;
    w.master_port = 15000 + slurm_int("SLURM_JOB_ID", tail.c_str());
  } else {
    w.master_port = 29500;
  }
  if (w.master_port == 0 || w.master_port > 65535) {
    throw ConfigError("MASTER_PORT=" + std::to_string(w.master_port) + " is not a port (1-65535)");
  }
  w.source = std::string("SLURM") + (job ? " job " + std::string(job) : std::string()) +
             (slurm_env("SLURM_STEP_ID") ? ", step " + std::string(slurm_env("SLURM_STEP_ID")) : std::string());
  return w;
}

}  // namespace kd::distributed
