// Loading an experiment: YAML files that may name a `base:` file to start from (relative to
// the including file, merged map by map; the including file wins, and a component map whose
// `type` differs from the base's replaces it whole), plus command-line
// overrides in Kauldron's form:
//
//   kd train --cfg=configs/fashion_mnist_cnn.yaml --cfg.optimizer.learning_rate=3e-4 \
//            --cfg.workdir=/tmp/x --cfg.evals={}
//
// Every node remembers which file (or which override) it came from, so errors point there.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "trainer/config/node.h"

namespace kd::config {

// (dotted key, YAML value), e.g. ("optimizer.learning_rate", "3e-4").
using Override = std::pair<std::string, std::string>;

// Throws kd::IOError (missing file), kd::ConfigError (bad YAML, a `base:` cycle, an override
// that descends into a value that is not a map).
Node load_experiment(const std::string& file, const std::vector<Override>& overrides = {});

// Parses "--cfg.a.b=value" arguments; other arguments are returned in `rest`.
std::vector<Override> parse_overrides(const std::vector<std::string>& args, std::vector<std::string>* rest);

}  // namespace kd::config
