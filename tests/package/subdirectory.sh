#!/usr/bin/env bash
# tests/package/subdirectory.sh SOURCE_DIR WORK_DIR CXX GENERATOR
#
# Configures a parent project that adds kd with add_subdirectory and sets no build type: kd must
# give it kd::kd, build none of its tests or binaries, leave the build type unset, and need no
# libjs-dygraphs (the report is kd's own build's option, KD_WITH_REPORT).
# KD_PARENT_PREFIX_PATH (":"-separated) and KD_TORCH_DIR are where the parent build found kd's
# dependencies and LibTorch, when not in the system's paths. Exits 77 (skipped) with CMake older than 3.24, which kd needs for this.
set -euo pipefail
parent_prefix=${KD_PARENT_PREFIX_PATH:-}
parent_prefix=${parent_prefix//:/;}
source=$1 work=$2 cxx=$3 generator=$4
version=$(cmake --version | head -1 | awk '{print $3}')
if [[ $(printf '%s\n' 3.24 "$version" | sort -V | head -1) != 3.24 ]]; then
  echo "CMake $version is older than 3.24: kd as a subdirectory needs 3.24"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work/parent"
cat >"$work/parent/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.21)
project(parent LANGUAGES CXX)
add_subdirectory("$source" kd)
add_executable(parent_app main.cpp)
target_link_libraries(parent_app PRIVATE kd::kd)
message(STATUS "parent build type: [\${CMAKE_BUILD_TYPE}]")
CMAKE
printf '#include "trainer/cli/cli.h"\nint main(int argc, char** argv) { return kd::cli::run(argc, argv); }\n' \
  >"$work/parent/main.cpp"
mkdir -p "$work/no-dygraphs"  # where kd would fail to find dygraph.min.js, were it looking
cmake -S "$work/parent" -B "$work/build" -G "$generator" -DCMAKE_CXX_COMPILER="$cxx" \
  -DKD_DYGRAPHS_DIR="$work/no-dygraphs" \
  ${parent_prefix:+-DCMAKE_PREFIX_PATH="$parent_prefix"} ${KD_TORCH_DIR:+-DTorch_DIR="$KD_TORCH_DIR"} \
  >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; exit 1; }
grep -q "parent build type: \[\]" "$work/configure.log" ||
  { echo "kd set the parent's build type:"; grep "build type" "$work/configure.log"; exit 1; }
if [[ $generator == Ninja* ]]; then
  targets=$(cmake --build "$work/build" -- -t targets all)  # every target, not only the top ones
else
  targets=$(cmake --build "$work/build" --target help)
fi
for want in parent_app kd_trainer; do
  grep -qw "$want" <<<"$targets" || { echo "no target $want"; exit 1; }
done
for unwanted in kd_tests kd_e2e_tests kd_custom_example train_bench apps/kd install; do
  if grep -Eq "(^|[ /])$unwanted(:| |$)" <<<"$targets"; then
    echo "kd added a target $unwanted to its parent"
    exit 1
  fi
done
if grep -q "report/report.cpp\|report/assets.cpp" "$work/build/build.ninja"; then
  echo "kd built its report for a parent (KD_WITH_REPORT is kd's own build's)"
  exit 1
fi
echo "kd as a subdirectory: kd::kd, no tests, binaries, install rules or report, the parent's build type kept"
