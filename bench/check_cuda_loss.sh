#!/usr/bin/env bash
# The loss kernels on CUDA against the f64 CPU reference, for every built-in, through the real CLI:
#   bash bench/check_cuda_loss.sh   (on the GPU machine, release forge in .device-carry/)
set -euo pipefail
fixture=tests/fixtures/losses/builtin.safetensors
out=$(mktemp -d)
for case in "grpo --aggregation fixed-horizon" "grpo --temperature 0.7 --set clip_low=0.05 --set clip_high=0.05" \
            "dapo --set dual_clip_c=1.5" "cispo --set clip_high=0.2" "gspo --set clip_low=0.05 --set clip_high=0.05" "sapo --temperature 1.3"; do
  name=${case%% *}
  for device in cpu cuda; do
    LD_LIBRARY_PATH=/usr/local/cuda/lib64 ./.device-carry/forge loss eval --loss $case --input $fixture \
      --output "$out/$name-$device.safetensors" --device $device > "$out/$name-$device.json"
  done
  python3 - "$out/$name-cpu.safetensors" "$out/$name-cuda.safetensors" "$name" <<'PY'
import sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
worst = 0.0
for k in a:
    scale = a[k].abs().max().item() or 1.0
    err = (a[k] - b[k]).abs().max().item() / scale
    worst = max(worst, err)
print(f"{sys.argv[3]}: loss cpu {a['loss'].item():.8g} cuda {b['loss'].item():.8g}; worst relative error over {len(a)} tensors {worst:.2e}")
assert worst <= 1e-5, "CUDA kernels disagree with the reference"
PY
done
