"""Timing shared by the PyTorch sides of the benchmarks: CUDA events, median of repeats."""

import torch


def median_ms(fn, warm=3, rep=10):
    """Median wall time of `fn` on the current CUDA stream, in milliseconds, after `warm` calls."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(rep):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]
