"""Check that a checkpoint saved by Forge loads in transformers and scores as Forge does.

Usage (on a machine with torch + transformers):
    python3 scripts/check_forge_checkpoint.py --model runs/arith-grpo/final --completions greedy.jsonl

`greedy.jsonl` holds `forge generate --model DIR --temperature 0 --json` lines (prompt_ids,
token_ids, logprobs). For each, transformers recomputes the log-probabilities of the completion
tokens (temperature 1) and greedy-decodes from the prompt; the script prints the largest
log-probability difference and whether the greedy tokens agree, and exits 1 on a mismatch
(difference above --tol, default 1e-4, or different tokens).
"""

import argparse
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--completions", required=True)
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()

    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    worst = 0.0
    same_tokens = True
    rows = [json.loads(line) for line in open(args.completions) if line.strip()]
    with torch.no_grad():
        for row in rows:
            prompt, tokens = row["prompt_ids"], row["token_ids"]
            ids = torch.tensor([prompt + tokens])
            logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
            for k, (tok, lp) in enumerate(zip(tokens, row["logprobs"])):
                diff = abs(logp[len(prompt) - 1 + k, tok].item() - lp)
                worst = max(worst, diff)
            out = model.generate(
                torch.tensor([prompt]),
                do_sample=False,
                max_new_tokens=len(tokens),
                eos_token_id=None,
                pad_token_id=0,
            )[0, len(prompt):].tolist()
            if out != tokens:
                same_tokens = False
                print(f"greedy differs for prompt {prompt}: transformers {out}, forge {tokens}")
    print(json.dumps({"completions": len(rows), "max_logprob_diff": worst, "greedy_tokens_equal": same_tokens}))
    return 0 if worst <= args.tol and same_tokens else 1


if __name__ == "__main__":
    sys.exit(main())
