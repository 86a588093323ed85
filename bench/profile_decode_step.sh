#!/usr/bin/env bash
# The GPU time of each kernel of a few decode steps, as Nsight Compute measures it (each launch
# replayed alone: its duration without the host's launch cost), summed by kernel and divided by
# the steps seen (GPU machine, repo root, `model` binary in .device-carry/, after
# `python3 bench/pytorch_model.py DIR`):
#   bash bench/profile_decode_step.sh DIR OUT_DIR
# Runs the decode benchmark's batch (64 prompts of 128 tokens) for NEW (default 64) new tokens
# with no warm-up and profiles COUNT (default 1100) launches after the first SKIP (default
# 12000: past the prefill, about 25 steps into decoding). CACHE=none keeps the caches as the
# previous kernel left them (default `all`: flushed before each kernel, so every weight and
# activation comes from DRAM).
set -uo pipefail
dir=$1
out=$2
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
DECODE_WARMUPS= DECODE_NEW_TOKENS=${NEW:-64} timeout 500 ncu --clock-control none --cache-control "${CACHE:-all}" --csv \
  --print-units base --metrics gpu__time_duration.sum \
  --launch-skip "${SKIP:-12000}" --launch-count "${COUNT:-1100}" \
  ./.device-carry/model "$dir" decode > "$out/ncu_step.csv" 2> "$out/ncu_step.err"
python3 - "$out/ncu_step.csv" <<'PY'
import collections, csv, os, re, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, rows = rows[0], rows[1:]
name_i, value_i = head.index("Kernel Name"), head.index("Metric Value")
grid_i = head.index("Grid Size")
tot, cnt = collections.Counter(), collections.Counter()
for r in rows:
    name = re.sub(r"[<(].*", "", r[name_i])
    ns = float(r[value_i].replace(",", ""))
    tot[name] += ns; cnt[name] += 1
# Steps seen: attention launches over the layers (LAYERS, default Qwen3-0.6B's 28). The window
# rarely holds whole steps, so counting the once-a-step sampling launches over-weights layers.
layers = int(os.environ.get("LAYERS", "28"))
attention = sum(c for n, c in cnt.items() if "decode_attention" in n)
steps = max(attention / layers, 1e-9)
print(f"launches {len(rows)}, steps (attention launches / {layers}) {steps:.2f}, "
      f"GPU time per step {sum(tot.values()) / steps / 1e3:.1f} us")
for name, ns in tot.most_common():
    print(f"{ns / steps / 1e3:9.1f} us/step {cnt[name] / steps:6.1f} launches/step "
          f"{ns / cnt[name] / 1e3:8.2f} us each  {name[:90]}")
PY
