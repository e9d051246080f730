# Shared by scripts/kd and scripts/test: set up once, then configure and build incrementally.
# Sourced, not run. Build output goes to stderr so `scripts/kd` prints only what kd prints.

# KD_LIBTORCH picks the LibTorch: debian (default; Debian's libtorch-dev 1.13, CPU, built in
# build/) or pypi (the one inside PyPI's torch wheel, 2.x with CUDA, built in build-pypi/).

KD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KD_LIBTORCH=${KD_LIBTORCH:-debian}
case "$KD_LIBTORCH" in
  pypi) KD_BUILD_DIR=${KD_BUILD_DIR:-$KD_ROOT/build-pypi} ;;
  *) KD_BUILD_DIR=${KD_BUILD_DIR:-$KD_ROOT/build} ;;
esac

# kd_setup [--tests]: training's packages, or the tests' too.
kd_setup() {
  "$KD_ROOT/scripts/setup" "$@" >&2
}

# The CMake prefix of the chosen LibTorch (empty for Debian's, which CMake finds itself): the
# wheel's torch/ folder itself, so that its config finds its own libraries before the system's.
kd_libtorch_prefix() {
  [[ "$KD_LIBTORCH" == pypi ]] || return 0
  local venv=${KD_LIBTORCH_VENV:-$KD_ROOT/.venv-libtorch} dir
  for dir in "$venv"/lib/python3*/site-packages/torch; do
    [[ -f "$dir/share/cmake/Torch/TorchConfig.cmake" ]] && echo "$dir" && return 0
  done
  echo "kd: no LibTorch in $venv; run KD_LIBTORCH=pypi scripts/setup" >&2
  return 1
}

# kd_build [TARGET...]: configure when needed, then build the given targets (default: all).
# KD_WITH_TESTS=ON (scripts/test) configures the tests in; otherwise a new build folder is
# configured without them (Catch2 is a test package) and an existing one is left as it is.
kd_build() {
  local cache="$KD_BUILD_DIR/CMakeCache.txt" tests=${KD_WITH_TESTS:-OFF}
  if [[ ! -f "$KD_BUILD_DIR/build.ninja" ]] ||
    { [[ $tests == ON ]] && ! grep -qx 'KD_BUILD_TESTS:BOOL=ON' "$cache"; }; then
    local prefix
    prefix=$(kd_libtorch_prefix)
    cmake -S "$KD_ROOT" -B "$KD_BUILD_DIR" -G Ninja ${prefix:+-DCMAKE_PREFIX_PATH="$prefix"} \
      -DKD_BUILD_TESTS="$tests" ${KD_CMAKE_ARGS:-} >&2
  fi
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  # Two jobs: each LibTorch translation unit needs about 1 GB of memory and a core.
  cmake --build "$KD_BUILD_DIR" --parallel "${KD_BUILD_JOBS:-2}" "${targets[@]}" >&2
}
