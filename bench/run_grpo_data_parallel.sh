#!/usr/bin/env bash
# Benchmark 4 with a data-parallel trainer on a machine with two GPUs: one GPU, two trainer ranks
# (generator beside rank 0), two ranks and two generator replicas (off by one and on-policy), the
# same with a KL term and the reference model on GPU 1, in one call. The binary is
# bench/run_grpo_step.sh's (.device-carry/grpo-qwen3-0.6b, gzipped or not). Logs and GPU memory
# every 3 s go to $OUT/logs. RUNS picks runs by name (default: all: one dp2 dp2g2 dp2g2on
# dp2g2ref); TORCH=1 ends with PyTorch's side in bf16 on one GPU:
#   OUT=/some/dir [RUNS="one dp2g2"] [TORCH=1] bash bench/run_grpo_data_parallel.sh
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
RUNS=${RUNS:-one dp2 dp2g2 dp2g2on dp2g2ref}
G2="--set services.generator.num_replicas=2 --set services.generator.devices=[0,1]"
forge() { # name, what, FORGE_ARGS, MICRO
  case " $RUNS " in *" $1 "*) ;; *) return ;; esac
  echo "== Forge, $2"; date
  SKIP_TORCH=1 MICRO=$4 FORGE_ARGS="$3" bash bench/run_grpo_step.sh /tmp/$1 2>$OUT/logs/$1.err; tail -5 $OUT/logs/$1.err
}
forge one "one GPU (MICRO=8)" "" 8
forge dp2 "two trainer ranks, generator on GPU 0 (MICRO=4 per rank)" "$DP --set services.generator.devices=[0]" 4
forge dp2g2 "two trainer ranks, generator replicas on GPUs 0 and 1" "$DP $G2" 4
forge dp2g2on "two trainer ranks + two generator replicas, strictly on-policy" "$DP $G2 --set replay_buffer.max_policy_age=0" 4
forge dp2g2ref "two trainer ranks + two generator replicas, KL term (beta 0.04), reference on GPU 1" "$DP $G2 --set loss.beta=0.04 --set services.ref_model.devices=[1]" 4
if [ -n "${TORCH:-}" ]; then
  echo "== PyTorch + transformers, bf16, one GPU"; date
  DTYPES=bf16 python3 bench/pytorch_grpo_step.py "$STEPS"
fi
date
kill %1 2>/dev/null
