#!/usr/bin/env bash
# Benchmark 4: GRPO steps of a random Qwen3-0.6B-shaped policy on one GPU (bench/grpo_step/), 8
# prompts x 8 samples, with the step time broken down by stage in metrics.jsonl. The binary is
# the one `forge build` generated for bench/grpo_step/grpo-qwen3-0.6b.yaml, carried in
# .device-carry/ (see bench/README.md; the yaml trains in bf16), or the one BINARY names (e.g.
# BINARY=grpo-qwen3-0.6b-f32, built with `--set model.dtype=f32`):
#   bash bench/run_grpo_step.sh [OUT_DIR]
# The shape comes from the environment; the defaults are benchmark 4's (256-token prompts,
# 512-token responses, 8 micro-batches of 8 sequences). Session 5-6's smaller runs were
# PROMPT_LEN=6 NEW=128 MICRO=1. FORGE_ARGS adds arguments to the Forge run (e.g.
# FORGE_ARGS="--set model.matmul_precision=tf32"); SKIP_TORCH=1 leaves PyTorch out, DTYPES=bf16
# runs its bf16 side alone. Prints the per-step stage times as JSON lines: PyTorch +
# transformers first (bench/pytorch_grpo_step.py, same shape, f32 and bf16), then Forge.
set -euo pipefail
out=${1:-$(mktemp -d)}
mkdir -p "$out"
root=$(pwd)
export PROMPT_LEN=${PROMPT_LEN:-256} NEW=${NEW:-512} MICRO=${MICRO:-8} STEPS=${STEPS:-3}
[ -n "${SKIP_TORCH:-}" ] || python3 bench/pytorch_grpo_step.py "$STEPS"
# Prompts of exactly PROMPT_LEN tokens (the arithmetic tokenizer reads one character a token):
# random sums ending in "=", all one length, as PyTorch's random prompts are.
python3 - "$out/prompts.jsonl" <<'PY'
import json, os, random, sys
n = int(os.environ["PROMPT_LEN"])
rng = random.Random(0)
with open(sys.argv[1], "w") as f:
    for _ in range(64):
        body = "".join(rng.choice("0123456789+") for _ in range(n - 2))
        body = "1" + body.replace("++", "+1")[: n - 2]
        f.write(json.dumps({"prompt": body + "=", "answer": "0"}) + "\n")
PY
# NCCL (data-parallel trainer ranks sum their gradients through it): PyTorch's wheel has one.
nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib"))' 2>/dev/null || true)
LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/extras/CUPTI/lib64${nccl:+:$nccl} ./.device-carry/${BINARY:-grpo-qwen3-0.6b} \
  --set "model.path=$root/bench/grpo_step/qwen3-0.6b" \
  --set "dataset.path=$out/prompts.jsonl" \
  --set "metrics.dir=$out" \
  --set "sampling.max_tokens=$NEW" \
  --set "training.seq_len=$((PROMPT_LEN + NEW))" \
  --set "training.gradient_accumulation_steps=$MICRO" \
  --set "training.steps=$STEPS" ${FORGE_ARGS:-}
python3 - "$out/grpo-qwen3-0.6b/metrics.jsonl" <<'PY'
import json, sys
keys = ["step", "time/step_s", "time/generate_s", "time/generate_model_s",
        "time/generate_logits_s", "time/generate_sample_s", "time/reward_s", "time/reference_s",
        "time/train_s", "time/rollout_wait_s", "time/weight_sync_s", "rollout/policy_age",
        "throughput/generate_tok_s",
        "throughput/train_tok_s", "train/tokens", "loss/ratio_mean", "loss/kl"]
for line in open(sys.argv[1]):
    row = json.loads(line)
    print(json.dumps({k: row[k] for k in keys if k in row}))
PY
