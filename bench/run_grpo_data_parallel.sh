#!/usr/bin/env bash
# Benchmark 4 with a data-parallel trainer on a machine with two GPUs: one GPU, two trainer ranks
# (generator beside rank 0), two ranks and two generator replicas (off by one and on-policy), in
# one call. The binary is bench/run_grpo_step.sh's (.device-carry/grpo-qwen3-0.6b, gzipped or
# not). Logs and GPU memory every 3 s go to $OUT/logs:
#   OUT=/some/dir bash bench/run_grpo_data_parallel.sh
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
[ -f .device-carry/grpo-qwen3-0.6b.gz ] && gunzip -f .device-carry/grpo-qwen3-0.6b.gz
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c 'import nvidia.nccl, os; print(os.listdir(os.path.join(nvidia.nccl.__path__[0], "lib")))' || ldconfig -p | grep nccl
mkdir -p $OUT/logs
export STEPS=5
nvidia-smi --query-gpu=timestamp,index,memory.used --format=csv,noheader -l 3 > $OUT/logs/memory.csv &
DP="--set services.trainer.procs=2 --set parallelism.data_parallel_replicate_degree=2 --set services.trainer.devices=[0,1]"
echo "== Forge, one GPU (MICRO=8)"; date
SKIP_TORCH=1 bash bench/run_grpo_step.sh /tmp/one 2>$OUT/logs/one.err; tail -3 $OUT/logs/one.err
echo "== Forge, two trainer ranks, generator on GPU 0 (MICRO=4 per rank)"; date
SKIP_TORCH=1 MICRO=4 FORGE_ARGS="$DP --set services.generator.devices=[0]" bash bench/run_grpo_step.sh /tmp/dp2 2>$OUT/logs/dp2.err; tail -5 $OUT/logs/dp2.err
echo "== Forge, two trainer ranks, generator replicas on GPUs 0 and 1"; date
SKIP_TORCH=1 MICRO=4 FORGE_ARGS="$DP --set services.generator.num_replicas=2 --set services.generator.devices=[0,1]" bash bench/run_grpo_step.sh /tmp/dp2g2 2>$OUT/logs/dp2g2.err; tail -5 $OUT/logs/dp2g2.err
echo "== Forge, two trainer ranks + two generator replicas, strictly on-policy"; date
SKIP_TORCH=1 MICRO=4 FORGE_ARGS="$DP --set services.generator.num_replicas=2 --set services.generator.devices=[0,1] --set replay_buffer.max_policy_age=0" bash bench/run_grpo_step.sh /tmp/dp2g2on 2>$OUT/logs/dp2g2on.err; tail -5 $OUT/logs/dp2g2on.err
date
kill %1 2>/dev/null
