#!/usr/bin/env bash
# All four benchmarks in one call on the GPU machine, each with its PyTorch baseline run in the
# same call, plus the CUDA correctness check of the loss kernels; outputs into OUT_DIR. Needs the
# binaries of bench/README.md in .device-carry/ (gzipped or not):
#   bash bench/run_all.sh OUT_DIR
# 561 s on an H200 (2026-11-27: check 36, loss 51, model 121, GRPO 290, on-policy 63), plus ~60 s
# for the optional f32 GRPO run: over a 10-minute call with it. A failing benchmark is reported
# and the others still run; each step is also its own command (the scripts named below).
set -uo pipefail
out=${1:?usage: bash bench/run_all.sh OUT_DIR}
mkdir -p "$out"
for f in .device-carry/*.gz; do
  [ -e "$f" ] && gunzip -f "$f"
done
chmod +x .device-carry/* 2>/dev/null
status=0
step() {
  local name=$1
  shift
  local start=$SECONDS
  if "$@" > "$out/$name.out" 2> "$out/$name.err"; then
    echo "$name: ok ($((SECONDS - start)) s)"
  else
    echo "$name: FAILED ($((SECONDS - start)) s), see $out/$name.err"
    status=1
  fi
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/card.txt"
step check_cuda_loss bash bench/check_cuda_loss.sh                  # kernels vs f64, every built-in
step loss bash bench/run_loss.sh                                    # 1. loss forward + backward
step model bash bench/run_model.sh "$out" parity decode train      # parity, 2. decode, 3. train step
step grpo bash bench/run_grpo_step.sh "$out/grpo"                   # 4. GRPO step (off by one)
FORGE_ARGS="--set replay_buffer.max_policy_age=0" SKIP_TORCH=1 \
  step grpo_on_policy bash bench/run_grpo_step.sh "$out/grpo-on-policy"  # 4., strictly on-policy
if [ -x .device-carry/grpo-qwen3-0.6b-f32 ]; then                   # 4., trained in f32
  BINARY=grpo-qwen3-0.6b-f32 SKIP_TORCH=1 step grpo_f32 bash bench/run_grpo_step.sh "$out/grpo-f32"
fi
exit $status
