#!/usr/bin/env bash
# A few GRPO steps of a random Qwen3-0.6B-shaped policy on one GPU (bench/grpo_step/), with the
# step time broken down by stage in metrics.jsonl. The binary is the one `forge build` generated
# for bench/grpo_step/grpo-qwen3-0.6b.yaml, carried in .device-carry/ (see bench/README.md):
#   bash bench/run_grpo_step.sh [OUT_DIR]
# Prints the per-step stage times as JSON lines: PyTorch + transformers first
# (bench/pytorch_grpo_step.py, same shape, f32 and bf16), then Forge.
set -euo pipefail
out=${1:-$(mktemp -d)}
root=$(pwd)
python3 bench/pytorch_grpo_step.py 3
LD_LIBRARY_PATH=/usr/local/cuda/lib64 ./.device-carry/grpo-qwen3-0.6b \
  --set "model.path=$root/bench/grpo_step/qwen3-0.6b" \
  --set "dataset.path=$root/examples/arith/assets/train.jsonl" \
  --set "metrics.dir=$out"
python3 - "$out/grpo-qwen3-0.6b/metrics.jsonl" <<'PY'
import json, sys
keys = ["step", "time/step_s", "time/generate_s", "time/generate_model_s",
        "time/generate_logits_s", "time/generate_sample_s", "time/reward_s", "time/reference_s",
        "time/train_s", "throughput/generate_tok_s", "throughput/train_tok_s", "train/tokens",
        "loss/ratio_mean"]
for line in open(sys.argv[1]):
    row = json.loads(line)
    print(json.dumps({k: row[k] for k in keys if k in row}))
PY
