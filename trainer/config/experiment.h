// Loading an experiment: YAML files that may name a `base:` file to start from (relative to
// the including file, merged map by map; the including file wins, and a component map whose
// `type` differs from the base's replaces it whole), plus command-line
// overrides in Kauldron's form:
//
//   kd train --cfg=configs/fashion_mnist_cnn.yaml --cfg.optimizer.learning_rate=3e-4
//            --cfg.workdir=/tmp/x --cfg.evals={} --cfg.train_ds.transforms[0].vrange=[0,2]
//            --cfg.seed 3        # "--cfg.key value" as well as "--cfg.key=value"
//
// A key descends through maps by name and through lists by index ("transforms[0]"); a missing
// map key is created, a missing list element is an error.
//
// Every node remembers which file (or which override) it came from, so errors point there.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "trainer/config/node.h"

namespace kd::config {

// (dotted key, YAML value), e.g. ("optimizer.learning_rate", "3e-4"), ("a.list[1].b", "2").
using Override = std::pair<std::string, std::string>;

// Throws kd::IOError (missing file), kd::ConfigError (bad YAML, a `base:` cycle, an override
// that descends into a value that is not a map).
Node load_experiment(const std::string& file, const std::vector<Override>& overrides = {});

// Parses "--cfg.a.b=value" and "--cfg.a.b value" arguments (the value: the next argument, when
// it does not start with "--"); other arguments are returned in `rest`.
std::vector<Override> parse_overrides(const std::vector<std::string>& args, std::vector<std::string>* rest);

}  // namespace kd::config
