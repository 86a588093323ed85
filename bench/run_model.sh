#!/usr/bin/env bash
# Benchmarks 2 (decode) and 3 (train step) plus the model's bf16 parity with transformers, both
# sides in one run on one GPU. On the GPU machine, from the repo root, with the release binary in
# .device-carry/ (see bench/README.md):
#   bash bench/run_model.sh [OUT_DIR] [parity] [decode] [train]
set -euo pipefail
dir=$(mktemp -d)
out=${1:-$dir}
shift || true
python3 bench/pytorch_model.py "$dir"
LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/extras/CUPTI/lib64 ./.device-carry/model "$dir" "$@" | tee "$out/model.json"
