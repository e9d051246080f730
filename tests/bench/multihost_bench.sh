#!/bin/bash
# Two ranks of the flagship MLP across two network namespaces joined by a veth pair (two "hosts",
# real TCP between them) against two ranks on loopback (kd launch --nproc=2), interleaved rounds.
# Prints each round's training-loop steps/s (the sum of kd's log intervals) and the ratio.
# Needs root (ip netns). Not run by ctest.
#
#   tests/bench/multihost_bench.sh [--kd build/apps/kd] [--rounds 3] [--steps 1000] [--threads 1]
set -euo pipefail
kd=build/apps/kd rounds=3 steps=1000 threads=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --kd) kd=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "multihost_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
kd=$(readlink -f "$kd")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/kd-multihost-bench.XXXXXX)
a=kdbench_a_$$ b=kdbench_b_$$ va=kdba$$ vb=kdbb$$
cleanup() {
  ip netns del "$a" 2>/dev/null || true
  ip netns del "$b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$a"
ip netns add "$b"
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$a"
ip link set "$vb" netns "$b"
ip -n "$a" addr add 10.231.9.1/24 dev "$va"
ip -n "$b" addr add 10.231.9.2/24 dev "$vb"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "$va" up
ip -n "$b" link set "$vb" up

args=(train "--cfg=$root/configs/fashion_mnist_mlp.yaml" "--cfg.num_train_steps=$steps" --cfg.log_metrics_every=100
      "--cfg.num_threads=$threads" --cfg.evals={} --cfg.checkpointer.save_interval_steps=0)

# The training loop's steps/s from rank 0's log: steps over the sum of the log intervals' seconds.
loop_rate() {
  grep -o 'perf_stats/steps_per_sec [0-9.e+]*' "$1" | awk -v n="$steps" '{s += 100 / $2} END {printf "%.1f", n / s}'
}

echo "flagship MLP, 2 ranks of $threads thread(s), $steps steps (steps/s of the training loop)"
for round in $(seq "$rounds"); do
  rm -rf "$work/loop" "$work/veth"
  "$kd" launch --nproc=2 -- "${args[@]}" "--cfg.workdir=$work/loop" > "$work/loop.log" 2>&1
  ip netns exec "$a" "$kd" launch --nnodes=2 --node-rank=0 --nproc=1 --master-addr=10.231.9.1 --master-port=29571 \
    -- "${args[@]}" "--cfg.workdir=$work/veth" > "$work/veth_a.log" 2>&1 &
  rank0=$!
  ip netns exec "$b" "$kd" launch --nnodes=2 --node-rank=1 --nproc=1 --master-addr=10.231.9.1 --master-port=29571 \
    -- "${args[@]}" "--cfg.workdir=$work/veth" > "$work/veth_b.log" 2>&1
  wait "$rank0"
  loop=$(loop_rate "$work/loop.log")
  veth=$(loop_rate "$work/veth_a.log")
  echo "round $round: loopback $loop  two namespaces $veth  namespaces / loopback $(awk -v a="$veth" -v b="$loop" 'BEGIN {printf "%.3f", a / b}')"
done
grep -o 'data parallel: .*' "$work/veth_a.log" | head -1
