"""PyTorch + transformers side of the GRPO step benchmark (bench/run_grpo_step.sh): the shape the
Forge run is given, one GPU, written the way a TRL-style loop is:
`generate` (sampling, KV cache), the policy's logprobs recomputed by a forward pass, GRPO's
clipped loss (token mean, no KL), backward, AdamW. Random Qwen3-0.6B-shaped weights; the
prompts are random ids of the Forge run's prompt length; every completion runs to max_new_tokens
(no stop token), as the Forge run's random completions do. Rewards are zero on both sides, so the
reward stage is left out. The 64 sequences train in MICRO micro-batches (gradient accumulation,
as the Forge run's `gradient_accumulation_steps`). Timed per stage with CUDA synchronisation, in
f32 and bf16 (the Forge run's dtype by default, and what PyTorch users run).

Run: PROMPT_LEN=256 NEW=512 MICRO=8 python3 bench/pytorch_grpo_step.py [STEPS]
(those are the defaults, benchmark 4's shape; prints one JSON line per dtype and step)
"""
import json
import os
import sys
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
PROMPTS, SAMPLES = 8, 8
PROMPT_LEN = int(os.environ.get("PROMPT_LEN", 256))
NEW = int(os.environ.get("NEW", 512))
MICRO = int(os.environ.get("MICRO", 8))
V = 151936
dev = "cuda"


def sync_time(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


def run(dtype):
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=V, hidden_size=1024, intermediate_size=3072,
                      num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                      head_dim=128, max_position_embeddings=max(4096, PROMPT_LEN + NEW),
                      tie_word_embeddings=True,
                      rope_theta=1000000.0, bos_token_id=None, eos_token_id=None,
                      pad_token_id=0)
    model = Qwen3ForCausalLM(cfg).to(dev, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    for step in range(1, STEPS + 1):
        prompts = torch.randint(1, V, (PROMPTS, PROMPT_LEN), device=dev)
        batch = prompts.repeat_interleave(SAMPLES, dim=0)
        model.eval()

        def generate():
            with torch.no_grad():
                return model.generate(batch, do_sample=True, temperature=1.0, top_k=0,
                                      top_p=1.0, max_new_tokens=NEW, min_new_tokens=NEW,
                                      output_scores=False, return_dict_in_generate=False)

        seqs, t_gen = sync_time(generate)
        model.train()
        advantages = torch.zeros(batch.shape[0], device=dev)

        def train():
            total = 0.0
            for part in seqs.chunk(MICRO):
                adv = advantages[:part.shape[0]].unsqueeze(1)
                logits = model(part).logits[:, PROMPT_LEN - 1:-1].float()
                targets = part[:, PROMPT_LEN:]
                logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                old = logp.detach()
                ratio = torch.exp(logp - old)
                loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.28) * adv).mean() / MICRO
                loss.backward()
                total += loss.item()
                del logits, logp, ratio, loss
            opt.step()
            opt.zero_grad(set_to_none=True)
            return total

        _, t_train = sync_time(train)
        tokens = batch.shape[0] * NEW
        print(json.dumps({
            "side": "pytorch", "dtype": str(dtype).removeprefix("torch."), "step": step,
            "generate_s": t_gen, "generate_tok_s": tokens / t_gen,
            "train_s": t_train, "train_tok_s": tokens / t_train,
            "step_s": t_gen + t_train, "prompt_len": PROMPT_LEN, "new_tokens": NEW,
            "micro_batches": MICRO,
            "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        }), flush=True)
    del model, opt
    torch.cuda.empty_cache()


# DTYPES=bf16 runs the bf16 side alone (f32 takes the longer half of the time).
for name in os.environ.get("DTYPES", "f32,bf16").split(","):
    run({"f32": torch.float32, "bf16": torch.bfloat16}[name])
