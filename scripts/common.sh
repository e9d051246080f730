# Shared by scripts/kd and scripts/test: set up once, then configure and build incrementally.
# Sourced, not run. Build output goes to stderr so `scripts/kd` prints only what kd prints.

KD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KD_BUILD_DIR=${KD_BUILD_DIR:-$KD_ROOT/build}

kd_setup() {
  "$KD_ROOT/scripts/setup" >&2
}

# kd_build [TARGET...]: configure when needed, then build the given targets (default: all).
kd_build() {
  if [[ ! -f "$KD_BUILD_DIR/build.ninja" ]]; then
    cmake -S "$KD_ROOT" -B "$KD_BUILD_DIR" -G Ninja ${KD_CMAKE_ARGS:-} >&2
  fi
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  # Two jobs: each LibTorch translation unit needs about 1 GB of memory and a core.
  cmake --build "$KD_BUILD_DIR" --parallel "${KD_BUILD_JOBS:-2}" "${targets[@]}" >&2
}
