#!/usr/bin/env bash
# The language-model flagship (configs/python_bytes_gpt.yaml) in kd against the same model, data,
# batch, optimizer and threads in a nanoGPT-style PyTorch program (tests/bench/gpt_pytorch.py),
# each a fresh process, interleaved over rounds. Prints one line per run: tokens/s (median and
# range of the log intervals), the training loss of the last log interval, and the validation loss
# and bits per byte over the same 100 batches of 64 validation windows.
#
#   tests/bench/gpt_bench.sh [--rounds 3] [--steps 300] [--threads 2] [--kd build/apps/kd]
#                            [--python "python3"] [--python "/path/venv/bin/python3 --sdpa"]
#
# --kd and --python may each be given more than once (kd built against Debian's LibTorch and
# against PyPI's, `KD_LIBTORCH=pypi`; Debian's PyTorch 1.13, kd's LibTorch, and PyPI's PyTorch 2
# with scaled_dot_product_attention as nanoGPT uses it); the defaults are build/apps/kd and
# python3.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rounds=3 steps=300 threads=2
kds=() pythons=()
while (($#)); do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --kd) kds+=("$2"); shift 2 ;;
    --python) pythons+=("$2"); shift 2 ;;
    *) echo "gpt_bench: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
((${#pythons[@]})) || pythons=(python3)
((${#kds[@]})) || kds=("$root/build/apps/kd")
work=$(mktemp -d /tmp/kd_gpt_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
log_every=$((steps < 100 ? steps : 100))

run_kd() {
  local kd=$1 log=$work/kd.log
  rm -rf "$work/w"
  "$kd" train --cfg="$root/configs/python_bytes_gpt.yaml" --cfg.workdir="$work/w" --cfg.num_train_steps="$steps" \
    --cfg.num_threads="$threads" --cfg.log_metrics_every="$log_every" --cfg.checkpointer.save_interval_steps=0 \
    '--cfg.evals.validation.run={type: Final}' > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
  python3 - "$log" "$threads" "$steps" "$("$kd" --version)" <<'PY'
import json, re, statistics, sys
text = open(sys.argv[1]).read()
rates = [float(r) * 32 * 128 for r in re.findall(r'perf_stats/steps_per_sec ([0-9.]+)', text)]
train = [l for l in text.splitlines() if re.search(r' step \d+ .*losses/xent', l) and 'eval ' not in l]
curve = [float(re.search(r'losses/xent ([0-9.]+)', l).group(1)) for l in train]
val = [l for l in text.splitlines() if 'eval validation' in l][-1]
loss = float(re.search(r'losses/xent ([0-9.]+)', val).group(1))
print(json.dumps({'program': sys.argv[4], 'threads': int(sys.argv[2]), 'steps': int(sys.argv[3]),
                  'tokens_per_sec': statistics.median(rates), 'tokens_per_sec_min': min(rates),
                  'tokens_per_sec_max': max(rates),
                  'train_loss': float(re.search(r'losses/xent ([0-9.]+)', train[-1]).group(1)),
                  'train_losses': curve, 'val_loss': loss, 'val_bits_per_byte': float(re.search(r'metrics/bits_per_byte ([0-9.]+)', val).group(1))}))
PY
}

for ((r = 1; r <= rounds; ++r)); do
  echo "# round $r of $rounds"
  if ((r % 2)); then for k in "${kds[@]}"; do run_kd "$k"; done; fi
  for p in "${pythons[@]}"; do
    read -r -a words <<< "$p"  # the interpreter, then the program's own flags (--sdpa)
    "${words[0]}" "$root/tests/bench/gpt_pytorch.py" "${words[@]:1}" --threads "$threads" --steps "$steps" \
      --log-every "$log_every"
  done
  if ((r % 2 == 0)); then for k in "${kds[@]}"; do run_kd "$k"; done; fi
done
