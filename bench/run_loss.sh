#!/usr/bin/env bash
# Benchmark 1, both sides in one run on one GPU. On the GPU machine, from the repo root, with the
# release binary in .device-carry/ (see bench/README.md):
#   bash bench/run_loss.sh
set -euo pipefail
dir=$(mktemp -d)
python3 bench/pytorch_loss.py "$dir"
LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/extras/CUPTI/lib64 ./.device-carry/loss "$dir"
