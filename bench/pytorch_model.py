"""PyTorch side of benchmarks 2 and 3 (and the model's bf16 parity check), one GPU, bf16.

Builds a random Qwen3-0.6B-shaped model (seeded), saves it as a Hugging Face checkpoint with a
word-level tokenizer of the same vocabulary for Forge to load, writes the logits transformers
computes on a parity batch (bf16 and f32 model), and times HF `generate` (batch 64, 128-token
prompts, 256 new tokens) and a train step (forward + backward + fused AdamW, 8 x 1024 tokens).

Run: python3 bench/pytorch_model.py DIR   (writes DIR/model/, DIR/parity.safetensors, DIR/torch.json;
SKIP_TRAIN=1 leaves out the train step)
"""
import json
import os
import sys
import time

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_timing import median_ms  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Qwen3Config, Qwen3ForCausalLM

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
dev = "cuda"
V = 151936
res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

cfg = Qwen3Config(vocab_size=V, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                  max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=1000000.0,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
model = Qwen3ForCausalLM(cfg).to(dev, torch.bfloat16).eval()
# Random init gives near-zero logits; scale the head so the distribution is not uniform.
with torch.no_grad():
    model.model.embed_tokens.weight.mul_(20.0)
nparams = sum(p.numel() for p in model.parameters())
res["params"] = nparams
model_dir = os.path.join(out, "model")
model.save_pretrained(model_dir, safe_serialization=True)
tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(V)}, unk_token="t0"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.save(os.path.join(model_dir, "tokenizer.json"))
with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)


def bench(fn, warm=2, rep=5):
    return median_ms(fn, warm, rep)


# Copy bandwidth, for the decode floor.
x = torch.empty(1024**3 // 2, dtype=torch.bfloat16, device=dev).normal_()
y = torch.empty_like(x)
res["copy_TBps"] = 2 * x.numel() * 2 / bench(lambda: y.copy_(x)) / 1e9
del x, y

# Parity batch: the bf16 model and an f32 copy of the same weights.
ids = torch.randint(0, V, (4, 64), generator=torch.Generator().manual_seed(1)).to(dev)
with torch.no_grad():
    logits_bf16 = model(ids).logits.float()
    model_f32 = Qwen3ForCausalLM(cfg).to(dev).eval()
    model_f32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    logits_f32 = model_f32(ids).logits.float()
    del model_f32
save_file({"input_ids": ids.cpu(), "logits_bf16": logits_bf16.cpu().contiguous(),
           "logits_f32": logits_f32.cpu().contiguous()}, os.path.join(out, "parity.safetensors"))
del logits_bf16, logits_f32
torch.cuda.empty_cache()

# Decode: batch 64, 128-token prompts, 256 new tokens, temperature 1, every row to the end.
B, P, T = 64, 128, 256
prompt = torch.randint(0, V, (B, P), device=dev)
with torch.no_grad():
    gen = lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=T,
                                 min_new_tokens=T, do_sample=True, temperature=1.0, top_p=1.0,
                                 top_k=0, pad_token_id=0)
    gen()
    torch.cuda.synchronize()
    t0 = time.time()
    gen()
    torch.cuda.synchronize()
    res["hf_generate_tok_s"] = B * T / (time.time() - t0)
res["decode_floor_tok_s"] = B / (nparams * 2 / (res["copy_TBps"] * 1e12))

# Train step: forward + backward + fused AdamW on 8 x 1024 tokens (SKIP_TRAIN=1 leaves it out,
# for a call that runs no Forge train step).
if os.environ.get("SKIP_TRAIN") == "1":
    json.dump(res, open(os.path.join(out, "torch.json"), "w"), indent=1)
    print(json.dumps(res))
    sys.exit(0)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0, fused=True)
Bt, S = 8, 1024
tids = torch.randint(0, V, (Bt, S), device=dev)


def train_step():
    out_ = model(tids, labels=tids)
    out_.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


torch.cuda.reset_peak_memory_stats()
ms = bench(train_step)
res["train_step_ms"] = ms
res["train_tok_s"] = Bt * S / ms * 1e3
res["train_mfu_vs_800TF"] = 6 * nparams * Bt * S / (ms / 1e3) / 800e12
res["train_peak_GB"] = torch.cuda.max_memory_allocated() / 1e9

json.dump(res, open(os.path.join(out, "torch.json"), "w"), indent=1)
for k, v in res.items():
    print(f"{k:24s} {v:.4g}" if isinstance(v, float) else f"{k:24s} {v}")
