"""Reference values for Forge's built-in losses, computed by PyTorch autograd in float64.

An implementation independent of Forge's (written from the papers: GRPO/Dr. GRPO 2503.20783,
DAPO 2503.14476, CISPO 2506.13585, GSPO 2507.18071, SAPO 2511.20347), over one random batch with
ignored targets, interleaved masks and an all-masked row. Forge's test `loss_fixtures` checks its
loss, d loss / d logits and target log-probabilities against these.

Regenerate (needs torch and safetensors; the GPU machine has both):
    python3 scripts/make_loss_fixtures.py tests/fixtures/losses/builtin.safetensors
"""

import json
import sys

import torch
from safetensors.torch import save_file

B, S, V = 3, 7, 11
IGNORE = -100
KL_CLAMP = 20.0


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, S, V, generator=g) * 2.0).float()
    targets = torch.randint(0, V, (B, S), generator=g)
    targets[0, 0] = IGNORE  # a position without a target
    targets[1, 5] = IGNORE
    mask = torch.ones(B, S)
    mask[0, 1::3] = 0.0  # interleaved masked tokens
    mask[1, :2] = 0.0  # a masked prompt
    mask[2, :] = 0.0  # an all-masked row
    with torch.no_grad():
        lp = torch.log_softmax(logits.double(), -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    # Behaviour and reference log-probs near the policy's, so ratios fall on both sides of the clips.
    old = (lp + 0.35 * torch.randn(B, S, generator=g, dtype=torch.float64)).float()
    ref = (lp + 0.5 * torch.randn(B, S, generator=g, dtype=torch.float64)).float()
    adv = torch.tensor([[1.3], [-0.8], [0.6]]).expand(B, S).contiguous().float()
    return logits, targets, old, ref, adv, mask


def k3(lp, ref):
    d = (ref - lp).clamp(-KL_CLAMP, KL_CLAMP)
    return d.exp() - d - 1.0


def ppo_clip(ratio, adv, lo, hi):
    return -torch.minimum(ratio * adv, ratio.clamp(1.0 - lo, 1.0 + hi) * adv)


def per_token(name, p, lp, old, ref, adv, active):
    ratio = (lp - old).exp()
    if name == "grpo":
        return ppo_clip(ratio, adv, p["clip_low"], p["clip_high"]) + p["beta"] * k3(lp, ref)
    if name == "dapo":
        pg = ppo_clip(ratio, adv, p["clip_low"], p["clip_high"])
        return torch.where(adv < 0, torch.minimum(pg, -p["dual_clip_c"] * adv), pg)
    if name == "cispo":
        w = ratio.clamp(1.0 - p["clip_low"], 1.0 + p["clip_high"]).detach()
        return -w * adv * lp
    if name == "gspo":
        count = active.sum(-1, keepdim=True)
        s = ((lp - old) * active).sum(-1, keepdim=True) / count.clamp(min=1.0)
        return ppo_clip(s.exp(), adv, p["clip_low"], p["clip_high"]).expand_as(lp)
    if name == "sapo":
        tau = torch.where(adv > 0, torch.full_like(adv, p["tau_pos"]), torch.full_like(adv, p["tau_neg"]))
        return -torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * adv
    raise ValueError(name)


def aggregate(kind, loss, active, horizon):
    count = active.sum(-1)
    if kind == "token_mean":
        return (loss * active).sum() / active.sum()
    if kind == "sequence_mean":
        nonempty = count > 0
        per_seq = (loss * active).sum(-1)[nonempty] / count[nonempty]
        return per_seq.mean()
    if kind == "fixed_horizon":
        return (loss * active).sum() / (loss.shape[0] * horizon)
    raise ValueError(kind)


CASES = [
    ("grpo", "fixed_horizon", {"clip_low": 0.2, "clip_high": 0.28, "beta": 0.1}, 1.0),
    ("grpo", "token_mean", {"clip_low": 0.1, "clip_high": 0.15, "beta": 0.05}, 0.7),
    ("dapo", "token_mean", {"clip_low": 0.2, "clip_high": 0.28, "dual_clip_c": 1.5}, 1.0),
    ("cispo", "token_mean", {"clip_low": 1.0, "clip_high": 0.2}, 1.0),
    ("gspo", "sequence_mean", {"clip_low": 0.05, "clip_high": 0.05}, 1.0),
    ("sapo", "sequence_mean", {"tau_pos": 1.0, "tau_neg": 1.05}, 1.3),
]


def main(path):
    logits, targets, old, ref, adv, mask = batch()
    tensors = {
        "logits": logits,
        "target_ids": targets,
        "generator_logprobs": old,
        "ref_logprobs": ref,
        "advantages": adv,
        "loss_mask": mask,
    }
    active = ((targets != IGNORE).double() * mask.double())
    cases = []
    for i, (name, agg, params, temperature) in enumerate(CASES):
        x = logits.double().requires_grad_(True)
        lp_all = torch.log_softmax(x / temperature, -1)
        lp = lp_all.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        per = per_token(name, params, lp, old.double(), ref.double(), adv.double(), active)
        per = torch.where(active > 0, per, torch.zeros_like(per))
        loss = aggregate(agg, per, active, horizon=S)
        loss.backward()
        key = f"case{i}"
        tensors[f"{key}.loss"] = loss.detach().reshape(1)
        tensors[f"{key}.grad_logits"] = x.grad.detach()
        tensors[f"{key}.logprobs"] = (lp * active).detach()
        cases.append({"key": key, "loss": name, "aggregation": agg, "params": params, "temperature": temperature})
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"cases": json.dumps(cases)})
    print(f"wrote {path}: {len(cases)} cases, torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/losses/builtin.safetensors")
