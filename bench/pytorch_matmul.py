"""cuBLAS side of the matmul comparison (bench/src/bin/matmul.rs): the same Qwen3-0.6B training
products in the same layouts (forward x·W, input gradient g·Wᵀ, weight gradient xᵀ·g, the LM
head), bf16 and f32 (TF32 off, PyTorch's default for matmul), timed with CUDA events.

Run: python3 bench/pytorch_matmul.py   (one JSON line per case)
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_timing import median_ms  # noqa: E402

CASES = [
    ("mlp_up_forward x·W", 8192, 1024, 3072),
    ("mlp_up_input_grad g·Wt", 8192, 3072, 1024),
    ("mlp_up_weight_grad xt·g", 1024, 8192, 3072),
    ("lm_head_forward x·W", 8192, 1024, 151936),
]

for dtype in (torch.bfloat16, torch.float32):
    for case, m, k, n in CASES:
        if case.endswith("g·Wt"):
            a, b = torch.randn(m, k, device="cuda", dtype=dtype), torch.randn(n, k, device="cuda", dtype=dtype).t()
        elif case.endswith("xt·g"):
            a, b = torch.randn(k, m, device="cuda", dtype=dtype).t(), torch.randn(k, n, device="cuda", dtype=dtype)
        else:
            a, b = torch.randn(m, k, device="cuda", dtype=dtype), torch.randn(k, n, device="cuda", dtype=dtype)
        ms = median_ms(lambda: a @ b, 3, 10)
        print(json.dumps({"bench": "matmul", "side": "cublas", "dtype": str(dtype).removeprefix("torch."),
                          "case": case, "m": m, "k": k, "n": n, "ms": ms,
                          "tflops": 2 * m * k * n / ms / 1e9,
                          "device": torch.cuda.get_device_name(0)}), flush=True)
        del a, b
