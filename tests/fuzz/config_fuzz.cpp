// Fuzzes an experiment: the input is YAML, read as kd reads an experiment file and, from its
// first line on, as a `--cfg.KEY=VALUE` override of it. Any kd::Error is a correct answer; a
// crash, hang, sanitizer report or other exception is a finding.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "trainer/common/error.h"
#include "trainer/config/experiment.h"
#include "trainer/config/node.h"

namespace {

void walk(const kd::config::Node& node, int depth) {
  if (depth > 80) return;
  if (node.is_map()) {
    for (const auto& key : node.keys()) walk(node.child(key), depth + 1);
  } else if (node.is_sequence()) {
    for (const auto& e : node.elements()) walk(e, depth + 1);
  } else if (node.is_scalar()) {
    (void)node.as_string();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto node = kd::config::Node::parse(text, "fuzz.yaml");
    walk(node, 0);
    (void)node.flatten();
    (void)kd::config::Node::parse(node.to_yaml(), "again.yaml");
  } catch (const kd::Error&) {
  }
  // The first line as an override of a small experiment.
  static const std::string file = [] {
    const auto path = std::filesystem::temp_directory_path() / ("kd_config_fuzz_" + std::to_string(getpid()) + ".yaml");
    std::ofstream(path) << "seed: 0\noptimizer: {type: adam, learning_rate: 0.1}\nmodel: {type: MLP, sizes: [1, 2]}\n";
    return path.string();
  }();
  const std::string line = text.substr(0, text.find('\n'));
  try {
    const auto overrides = kd::config::parse_overrides({"--cfg." + line}, nullptr);
    const auto node = kd::config::load_experiment(file, overrides);
    walk(node, 0);
    node.check_unknown_keys();
  } catch (const kd::Error&) {
  }
  return 0;
}
