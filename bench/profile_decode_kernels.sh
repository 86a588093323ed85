#!/usr/bin/env bash
# Where the decode engine's kernels lose time: the CUDA source cubecl generated for them, and
# Nsight Compute's view of a few launches of each (GPU machine, repo root, `model` binary in
# .device-carry/, after `python3 bench/pytorch_model.py DIR`):
#   bash bench/profile_decode_kernels.sh DIR OUT_DIR   (KERNELS="regex ..." picks the kernels)
# LAUNCH_SKIP (default 200) picks which launches of each kernel: 200 lands in the first warm-up,
# where caches are short; the last run's long caches start after ~9,200 attention launches
# (28 a step) or ~37,000 product launches (113 a step).
set -uo pipefail
dir=$1
out=$2
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
work=$(mktemp -d)
cat > "$work/cubecl.toml" <<TOML
[compilation.logger]
level = "full"
file = "$work/compile.log"
TOML
model=$(pwd)/.device-carry/model
(cd "$work" && timeout 90 "$model" "$dir" decode > /dev/null 2>&1)
python3 - "$work/compile.log" "$out" <<'PY'
import re, sys
log, out = sys.argv[1], sys.argv[2]
text = open(log, errors="replace").read()
blocks = text.split("[START_KERNEL_COMPILATION]")
for want in ["SkinnyMmaKernel", "SkinnyMatmulKernel", "DecodeAttentionKernel"]:
    for b in blocks:
        if want in b[:600]:
            open(f"{out}/{want}.txt", "w").write(b[:200000])
            break
names = sorted(set(re.findall(r"__global__ void (\w+)", text)))
open(f"{out}/entrypoints.txt", "w").write("\n".join(names))
PY
cat "$out/entrypoints.txt"
for k in ${KERNELS:-skinny_mma decode_attention matmul_epilogue}; do
  (cd "$work" && timeout 240 ncu --clock-control none --kill yes -k "regex:$k" --launch-skip ${LAUNCH_SKIP:-200} --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    "$model" "$dir" decode > "$out/ncu_$k.txt" 2>&1)
done
