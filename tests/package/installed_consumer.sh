#!/usr/bin/env bash
# tests/package/installed_consumer.sh BUILD_DIR SOURCE_DIR WORK_DIR CXX GENERATOR [LAUNCHER]
#
# Installs the kd of BUILD_DIR into WORK_DIR/prefix, builds examples/custom_experiment on its own
# against that copy (find_package(kd CONFIG REQUIRED) and kd::kd, nothing of kd's source tree),
# and trains with the program: its own model, loss and callback, by name. KD_PARENT_PREFIX_PATH
# (":"-separated) is where the parent build found LibTorch and the rest, when not in the system's
# paths. Exits 0 only when everything, the training included, succeeded.
set -euo pipefail
parent_prefix=${KD_PARENT_PREFIX_PATH:-}
parent_prefix=${parent_prefix//:/;}
build=$1 source=$2 work=$3 cxx=$4 generator=$5 launcher=${6:-}
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" >"$work/install.log"
# What a package holds: the library, the public headers (no internal ones), the binary, the config.
for f in lib/libkd.a include/kd/trainer/kd.h include/kd/trainer/cli/cli.h include/kd/trainer/common/version.h \
  bin/kd lib/cmake/kd/kdConfig.cmake lib/cmake/kd/kdConfigVersion.cmake share/kd/configs/fashion_mnist_mlp.yaml; do
  [[ -e "$prefix/$f" ]] || { echo "not installed: $f"; exit 1; }
done
internal=$(find "$prefix/include" -name '*_internal.h')
if [[ -n $internal ]]; then
  echo "internal headers were installed: $internal"
  exit 1
fi
"$prefix/bin/kd" --version

# The example, on its own: a copy outside kd's tree, so no relative path can reach kd's sources.
cp -r "$source/examples/custom_experiment" "$work/example"
cmake -S "$work/example" -B "$work/example-build" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$cxx" ${launcher:+-DCMAKE_CXX_COMPILER_LAUNCHER="$launcher"} \
  -DCMAKE_PREFIX_PATH="$prefix${parent_prefix:+;$parent_prefix}" >"$work/configure.log" ||
  { cat "$work/configure.log"; exit 1; }
cmake --build "$work/example-build" >"$work/build.log" || { cat "$work/build.log"; exit 1; }
program=$work/example-build/kd_custom_example

"$program" --version
"$program" configs ResidualMlp | grep -q "input_size, width=64, output_size" ||
  { echo "the program's own model is not registered"; exit 1; }
"$program" train --cfg="$work/example/experiment.yaml" --cfg.workdir="$work/workdir" --cfg.num_train_steps=300 \
  >"$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
cat "$work/train.log"
# The callback's line, with the accuracy the example reaches (0.97 here; chance is 0.25).
grep -Eq '\[custom\] holdout step 300: accuracy 0\.(9|8)' "$work/train.log" ||
  { echo "the program did not learn: no '[custom] holdout step 300: accuracy 0.8x or 0.9x' line"; exit 1; }
echo "an installed kd: found, linked, and trained with"
