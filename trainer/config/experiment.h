// Loading an experiment: YAML files that may name a `base:` file to start from (relative to
// the including file), plus command-line overrides in Kauldron's form:
//
//   kd train --cfg=configs/fashion_mnist_cnn.yaml --cfg.optimizer.learning_rate=3e-4
//            --cfg.workdir=/tmp/x --cfg.evals={} --cfg.train_ds.transforms[0].vrange=[0,2]
//            --cfg.seed 3        # "--cfg.key value" as well as "--cfg.key=value"
//
// An override's key descends through maps by name and through lists by index ("transforms[0]");
// a missing map key is created, a missing list element is an error.
//
// One rule puts a value where there is one already, the same for a file over its base and for an
// override over the files:
//   - a map merges into the map there, key by key (each key by this same rule), unless it names
//     another `type` (another component: its options are its own) or is tagged `!replace`;
//   - `{}` replaces: the key becomes an empty map (`evals: {}`: no evals);
//   - `null` removes the key: its default again;
//   - anything else (a list, a number, text) replaces the value there.
//
// References, resolved after the files and every override are merged:
//   decay_steps: ${num_train_steps}            the value at that key (a number, text, list or map)
//   warmup_steps: ${num_train_steps // 10}     arithmetic: numbers and keys with + - * / // %
//   name: "run-${seed}"                        inside text: the value's text
//   vmax: ${train_ds.transforms[0].vrange[1]}  a list element by index
// A key is written from the top of the experiment. Arithmetic keeps integers integers (but `/`);
// a whole number from `*` or `/` is written as an integer, so it can be a step count. `$${` is a
// literal "${". Inside a flow map ({...}) quote the value: {decay_steps: "${num_train_steps}"}.
// A missing key (with the nearest one), a cycle (with its chain) and arithmetic on what is not a
// number are errors naming the file and line. The experiment a run saves (config.yaml) holds the
// values resolved and, under `references:`, each reference as written: loading it puts them back
// before the overrides, so `kd train --cfg=WORKDIR/config.yaml --cfg.num_train_steps=400` moves
// decay_steps along.
//
// A YAML alias (*name) is read as a copy of its anchor's value (&name) made when the file is read:
// an override changes only the key it names, and warns when it changes a value an alias copied
// (use a reference to have the copy follow).
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
// that descends into a value that is not a map, a reference that does not resolve). Warnings
// (an override changing a value a YAML alias copied) go to `warnings` when given.
Node load_experiment(const std::string& file, const std::vector<Override>& overrides = {},
                     std::vector<std::string>* warnings = nullptr);

// Parses "--cfg.a.b=value" and "--cfg.a.b value" arguments (the value: the next argument, when
// it does not start with "--"); other arguments are returned in `rest`.
std::vector<Override> parse_overrides(const std::vector<std::string>& args, std::vector<std::string>* rest);

}  // namespace kd::config
