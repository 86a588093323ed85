"""PyTorch side of benchmark 1 (fused logprob + GRPO loss, forward and backward, bf16 logits
[8192 x 151936]): makes the inputs, times PyTorch eager and torch.compile on them, measures the
copy bandwidth that sets the memory floor, and saves the inputs plus PyTorch's loss and a few
gradient rows for the Forge side (`bench/src/bin/loss.rs`) to check against.

Adapted from ../shared/bench/pytorch_anchors.py; the loss is Forge's built-in GRPO (clip 0.2/0.28,
beta 0.1, k3 with the log-ratio clamped to +-20) with token-mean aggregation.
Usage: python3 bench/pytorch_loss.py DIR
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_timing import median_ms  # noqa: E402

N, V = int(os.environ.get("BENCH_N", 8192)), int(os.environ.get("BENCH_V", 151936))
dev = "cuda"
torch.manual_seed(0)


def bench(fn, warm=3, rep=10):
    return median_ms(fn, warm, rep)


def main(out):
    os.makedirs(out, exist_ok=True)
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "shape": [N, V]}

    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device=dev).normal_()
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    res["copy_TBps"] = 2 * x.numel() * 2 / ms / 1e9
    del x, y

    logits = (torch.randn(N, V, device=dev) * 2).to(torch.bfloat16).requires_grad_()
    tgt = torch.randint(0, V, (N,), device=dev)
    old = -torch.rand(N, device=dev) * 3 - 10
    ref = -torch.rand(N, device=dev) * 3 - 10
    adv = torch.randn(N, device=dev)
    mask = (torch.rand(N, device=dev) > 0.1).float()

    def grpo_loss():
        lp = -F.cross_entropy(logits.float(), tgt, reduction="none")
        r = torch.exp(lp - old)
        pg = torch.maximum(-r * adv, -torch.clamp(r, 0.8, 1.28) * adv)
        d = torch.clamp(ref - lp, -20, 20)
        kl = torch.exp(d) - d - 1
        loss = ((pg + 0.1 * kl) * mask).sum() / mask.sum().clamp(min=1)
        with torch.no_grad():  # entropy for the metrics, as Forge's kernel computes it
            z = logits.float()
            p = torch.softmax(z, -1)
            ent = (torch.logsumexp(z, -1) - (p * z).sum(-1)).mean()
        loss.backward()
        return loss, ent

    def step():
        logits.grad = None
        return grpo_loss()

    loss, _ = step()
    res["loss"] = loss.item()
    rows = [0, 1, N // 2, N - 1]
    grad_sample = logits.grad[rows].float().cpu()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    res["eager_ms"] = bench(step, warm=2, rep=5)
    res["eager_peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base
    res["floor_ms"] = 3 * N * V * 2 / (res["copy_TBps"] * 1e12) * 1e3
    # BENCH_QUICK=1: the reference values only, no torch.compile (a diagnostic run of Forge's side).
    try:
        if os.environ.get("BENCH_QUICK"):
            raise RuntimeError("skipped: BENCH_QUICK")
        compiled = torch.compile(grpo_loss)

        def step_c():
            logits.grad = None
            return compiled()

        res["compiled_ms"] = bench(step_c, warm=3, rep=5)
    except Exception as e:  # noqa: BLE001 - report, do not fail the benchmark
        res["compiled_err"] = repr(e)[:300]
    res["grad_rows"] = rows

    save_file(
        {
            "logits": logits.detach().cpu().contiguous(),
            "targets": tgt.cpu(),
            "old": old.cpu(),
            "ref": ref.cpu(),
            "adv": adv.cpu(),
            "mask": mask.cpu(),
            "grad_sample": grad_sample.contiguous(),
        },
        os.path.join(out, "inputs.safetensors"),
    )
    with open(os.path.join(out, "torch.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1])
