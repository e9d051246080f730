#!/usr/bin/env bash
# Peak memory of kd train over data read as needed, against the size of the data: an MLP on
# 64 x 64 x 3 uint8 pictures of N examples, batch 256, 1 worker: an Npy dataset (12 KiB an
# example) or, with --format jpeg, an ImageFolder of JPEG files (random pixels, quality 90: about
# 9 KiB each, in 10 class folders). Prints the peak anonymous and file-backed RSS of the process
# (polled from /proc every 0.2 s) and the last logged steps/s. With --limit-mb (as root, cgroup
# v1 or v2) the run is confined to that much memory, page cache included.
#
#   tests/bench/data_memory.sh [--examples 350000] [--steps 300] [--limit-mb 1024] [--format npy|jpeg]
#                              [--kd build/apps/kd] [--python .venv/bin/python3] [--dir /tmp/kd_data_memory]
set -euo pipefail
examples=350000 steps=300 limit_mb="" format=npy kd=build/apps/kd python=.venv/bin/python3 dir=/tmp/kd_data_memory
while [[ $# -gt 0 ]]; do
  case $1 in
    --examples) examples=$2 ;; --steps) steps=$2 ;; --limit-mb) limit_mb=$2 ;; --format) format=$2 ;;
    --kd) kd=$2 ;; --python) python=$2 ;; --dir) dir=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
case $format in
  npy)
    data=$dir/data_$examples
    if [[ ! -f $data/y.npy ]]; then
      mkdir -p "$data"
      "$python" - "$data" "$examples" <<'PY'
import sys, numpy as np
out, n = sys.argv[1], int(sys.argv[2])
x = np.lib.format.open_memmap(out + "/x.npy", mode="w+", dtype=np.uint8, shape=(n, 64, 64, 3))
rng = np.random.default_rng(0)
for s in range(0, n, 20000):
    e = min(n, s + 20000)
    x[s:e] = rng.integers(0, 255, size=(e - s, 64, 64, 3), dtype=np.uint8)
x.flush()
np.save(out + "/y.npy", rng.integers(0, 10, size=n).astype(np.int64))
PY
    fi
    source="{type: Npy, path: $data, fields: {image: x.npy, label: y.npy}"
    ;;
  jpeg)
    data=$dir/jpeg_$examples
    if [[ ! -f $data.done ]]; then
      mkdir -p "$data"
      "$python" - "$data" "$examples" <<'PY'
import os, sys, numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for c in range(10):
    os.makedirs(f"{out}/{c}", exist_ok=True)
for i in range(n):
    Image.fromarray(rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)).save(f"{out}/{i % 10}/{i}.jpg", quality=90)
open(out + ".done", "w").close()
PY
    fi
    source="{type: ImageFolder, path: $data, channels: 3"
    ;;
  *) echo "--format is npy or jpeg, not $format" >&2; exit 2 ;;
esac
cat > "$dir/exp.yaml" <<YAML
seed: 0
num_train_steps: $steps
log_metrics_every: 100
num_threads: 1
train_ds: $source, batch_size: 256, num_workers: 1, prefetch: 2,
  transforms: [
    {type: ValueRange, key: image, in_vrange: [0, 255], vrange: [0, 1]},
    {type: Reshape, key: image, shape: [12288]}]}
model: {type: MLP, input_size: 12288, hidden_sizes: [64], output_size: 10, inputs: {x: batch.image}}
train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels}}
optimizer: {type: adam, learning_rate: 0.001}
checkpointer: {save_interval_steps: 1000000}
evals: {}
YAML
workdir=$dir/workdir
rm -rf "$workdir"
group=""
if [[ -n $limit_mb ]]; then
  if [[ -d /sys/fs/cgroup/memory ]]; then  # cgroup v1
    group=/sys/fs/cgroup/memory/kd_data_memory
    mkdir -p $group
    echo $((limit_mb * 1024 * 1024)) > $group/memory.limit_in_bytes
  else  # cgroup v2
    group=/sys/fs/cgroup/kd_data_memory
    mkdir -p $group
    echo $((limit_mb * 1024 * 1024)) > $group/memory.max
  fi
fi
(
  [[ -n $group ]] && echo $BASHPID > $group/cgroup.procs
  exec "$kd" train --cfg="$dir/exp.yaml" --cfg.workdir="$workdir"
) > "$dir/log.txt" 2>&1 &
pid=$!
anon=0 file=0
while kill -0 $pid 2>/dev/null; do
  a=$(awk '/RssAnon/{print $2}' /proc/$pid/status 2>/dev/null || true)
  f=$(awk '/RssFile/{print $2}' /proc/$pid/status 2>/dev/null || true)
  [[ -n $a && $a -gt $anon ]] && anon=$a
  [[ -n $f && $f -gt $file ]] && file=$f
  sleep 0.2
done
rc=0
wait $pid || rc=$?
data_mb=$(du -sm "$data" | cut -f1)
echo "data ${data_mb} MB${limit_mb:+, memory limit ${limit_mb} MB}: exit $rc, peak RssAnon $((anon / 1024)) MB," \
     "peak RssFile $((file / 1024)) MB, $(grep -o 'steps_per_sec [0-9.]*' "$dir/log.txt" | tail -1)"
[[ -n $group ]] && rmdir $group 2>/dev/null || true
exit $rc
