"""Tiny Hugging Face checkpoints with reference outputs, for Forge's model and tokenizer tests.

Regenerate (needs torch, transformers 5.x, tokenizers, safetensors; the GPU machine has all of them,
and everything runs on the CPU in float32, so any machine with those packages gives the same files):

    python3 scripts/make_tiny_checkpoints.py --out tests/fixtures/models

Check a checkpoint that Forge saved against a fixture (exit 0 if max |logit diff| <= 1e-4):

    python3 scripts/make_tiny_checkpoints.py --check-saved DIR_OF_FORGE_SAVED_MODEL \
        --expected tests/fixtures/models/qwen3/expected.safetensors

What it writes, under --out, for each of qwen3/, qwen2/, llama/:
  config.json, model.safetensors, generation_config.json   save_pretrained(), random float32 weights
  tokenizer.json, tokenizer_config.json                    byte-level BPE trained here (V = 400)
  expected.safetensors                                     reference tensors (below)
  chat_cases.json, tokenize_cases.json                     qwen3/ and llama/ only
and manifest.json at the top (versions, seed, special-token ids, tensor names, checks).

expected.safetensors (every float tensor float32, every id tensor int64; CPU, eager attention):
  input_ids          [2, 12]     random ids in [0, V), no padding, positions 0..11
  logits             [2, 12, V]  model(input_ids).logits
  hidden.embed       [2, 12, H]  output of model.embed_tokens
  hidden.layer.{i}   [2, 12, H]  residual stream after decoder layer i (before the final norm)
  hidden.final_norm  [2, 12, H]  output of model.norm (what lm_head sees)
  rope_inv_freq      [head_dim/2] the model's rotary inv_freq buffer (llama3 scaling applied)
  greedy_prompt      [1, 6]      prompt ids
  greedy_tokens      [1, 10]     model.generate(do_sample=False, max_new_tokens=10), new tokens only,
                                 EOS disabled (eos_token_id=None) so it always makes 10
  greedy_logits      [1, 10, V]  logits that chose each greedy token, from one full forward over
                                 prompt + greedy_tokens[:-1] (no KV cache), rows 5..14
The prompt is chosen so that at every step the best logit beats the second by >= 0.005 and the 10
tokens hold at least 5 distinct ids. The file's metadata has one key, "forge_fixture": a JSON string
(arch, seed, versions, settings).

Configs (all: hidden 64, intermediate 128, 2 layers, 4 heads, 2 KV heads, head_dim 16, SiLU, V 400):
  qwen3  rope_theta 1e6, rms_norm_eps 1e-6, q/k RMSNorm, tied lm_head; config.json as transformers 5
         writes it ("rope_parameters": {"rope_type": "default", "rope_theta": ...}, "dtype")
  qwen2  rope_theta 1e4, rms_norm_eps 1e-6, q/k/v biases, untied; config.json in the older Hub style
         ("rope_theta", "rope_scaling": null, "torch_dtype"), with "sliding_window": 8 while
         "use_sliding_window" is false, as real Qwen2 configs do (transformers ignores it)
  llama  rope_theta 5e5, rms_norm_eps 1e-5, untied, older Hub style, "rope_scaling": {"rope_type":
         "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64}, eos_token_id a list
Special tokens (every tokenizer, ids 392..399 in this order): <|endoftext|> <|im_start|> <|im_end|>
<|begin_of_text|> <|end_of_text|> <|eot_id|> <|start_header_id|> <|end_header_id|>.

HF parameter names in model.safetensors (all float32; i in 0..1):
  model.embed_tokens.weight [V, 64], model.norm.weight [64],
  model.layers.{i}.input_layernorm.weight [64], model.layers.{i}.post_attention_layernorm.weight [64],
  model.layers.{i}.self_attn.{q_proj [64, 64], k_proj [32, 64], v_proj [32, 64], o_proj [64, 64]}.weight,
  model.layers.{i}.mlp.{gate_proj [128, 64], up_proj [128, 64], down_proj [64, 128]}.weight,
  qwen3 only: model.layers.{i}.self_attn.{q_norm,k_norm}.weight [16]; no lm_head.weight (tied)
  qwen2 only: model.layers.{i}.self_attn.{q_proj [64], k_proj [32], v_proj [32]}.bias; lm_head.weight [V, 64]
  llama:      lm_head.weight [V, 64]
"""

import argparse
import contextlib
import json
import math
import os
import platform
import random
import shutil
import sys
import traceback

SEED = 20251126
ARCHS = ("qwen3", "qwen2", "llama")
SEQ_BATCH, SEQ_LEN = 2, 12
PROMPT_LEN, NEW_TOKENS = 6, 10
MIN_GREEDY_MARGIN = 5e-3
MIN_GREEDY_DISTINCT = 5  # a greedy run that repeats one token tests little
CHECK_TOL = 1e-4
LINEAR_STD = 0.1  # q/k/v/o, MLP and an untied lm_head
# embed_tokens (also Qwen3's tied lm_head). Kept as small as the layer outputs: a larger embedding
# dominates the residual stream and a tied model then just repeats its last input token.
EMBED_STD = 0.1
NORM_JITTER = 0.1  # every RMSNorm weight is 1 + NORM_JITTER * randn
BIAS_STD = 0.1  # Qwen2's q/k/v biases

# --- tokenizer -----------------------------------------------------------------------------------

TRAIN_VOCAB = 392  # 256 byte symbols + 136 merges; the 8 special tokens below make V = 400
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
]
SPECIALS = QWEN_SPECIALS + LLAMA_SPECIALS  # every tokenizer has all 8, at ids TRAIN_VOCAB.. in this order

# Pre-tokenizer regexes of Qwen2/2.5/3 and of Llama 3 (digits one at a time vs. up to three).
QWEN_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
LLAMA_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2.5-Instruct's chat template, verbatim (its Jinja source has backslash-n escapes in strings).
QWEN25_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Meta-Llama-3-8B-Instruct's chat template, verbatim (real newlines inside its string literals;
# `message['content'] | trim` binds tighter than `+`, so only the content is trimmed).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CHAT_CASES = [
    {
        "name": "single_user",
        "messages": [{"role": "user", "content": "What is 12 + 7?"}],
        "add_generation_prompt": True,
    },
    {
        "name": "system_user",
        "messages": [
            {"role": "system", "content": "You are a careful math tutor."},
            {"role": "user", "content": "What is 3 * 4? Answer with a number."},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "multi_turn",
        "messages": [
            {"role": "user", "content": "What is 12 + 7?"},
            {"role": "assistant", "content": "12 + 7 = 19. The answer is 19."},
            {"role": "user", "content": "And 19 - 5?"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "no_generation_prompt",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello in French."},
            {"role": "assistant", "content": "Bonjour! Ça va? → 世界"},
        ],
        "add_generation_prompt": False,
    },
    {
        # Llama 3's template trims content, Qwen's does not.
        "name": "whitespace_content",
        "messages": [{"role": "user", "content": "  spaced out \n\n"}],
        "add_generation_prompt": True,
    },
]

TOKENIZE_STRINGS = [
    "Hello, world!",
    "héllo → 世界",
    "What is 12 + 7? 12 + 7 = 19. The answer is 19.",
    "1234567890 and 3.14159",
    "  leading spaces,   runs of   spaces,\ttabs\t\tand\n\nnewlines\r\n  ",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "emoji 🙂 and café naïve",
    "<|im_start|>user\nhi<|im_end|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "",
]

# --- models ----------------------------------------------------------------------------------------

COMMON_DIMS = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    hidden_act="silu",
)
ROPE = {
    "qwen3": {"rope_type": "default", "rope_theta": 1000000.0},
    "qwen2": {"rope_type": "default", "rope_theta": 10000.0},
    # original_max_position_embeddings 64 (not 32) so that with head_dim 16 and theta 5e5 the three
    # llama3 bands are all hit: wavelengths 6.3 (< 16, kept), 32.4 (16..64, smoothed), 167+ (/ factor).
    "llama": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
}
# config.json as written: qwen3 as transformers 5 saves it ("rope_parameters", "dtype"); qwen2 and
# llama rewritten in the older Hub style ("rope_theta", "rope_scaling", "torch_dtype"), the way
# real Qwen2.5 / Llama-3.1 checkpoints look. The reload check proves transformers reads both alike.
LEGACY_STYLE = {"qwen3": False, "qwen2": True, "llama": True}
# Qwen2 Hub configs carry a sliding_window while use_sliding_window is false; transformers ignores it.
# 8 < 12 tokens, so a loader that wrongly applies it fails the logits test.
QWEN2_DECOY_SLIDING_WINDOW = 8


def family(arch):
    return "llama" if arch == "llama" else "qwen"


# --- reporting -------------------------------------------------------------------------------------

PROBLEMS = []  # (stage, message): printed at the end, non-zero exit


def log(msg=""):
    print(msg, flush=True)


def problem(stage, msg):
    PROBLEMS.append((stage, msg))
    log(f"!! PROBLEM [{stage}]: {msg}")


@contextlib.contextmanager
def stage(name, fatal=False):
    log(f"\n=== {name}")
    try:
        yield
    except Exception as e:  # noqa: BLE001 - every failure is reported, then we go on
        tb = traceback.format_exc()
        log(tb)
        problem(name, f"{type(e).__name__}: {e}")
        if fatal:
            raise SystemExit(finish()) from e


def finish():
    log("\n" + "=" * 80)
    if PROBLEMS:
        log(f"{len(PROBLEMS)} PROBLEM(S):")
        for st, msg in PROBLEMS:
            log(f"  [{st}] {msg}")
        log("FAILED: the files written so far are listed above; fix the problems before committing them.")
        return 1
    log("OK: every check passed.")
    return 0


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# --- tokenizer construction ------------------------------------------------------------------------


def build_corpus(seed):
    """A few thousand lines of English, arithmetic and chat-like text, deterministic."""
    rng = random.Random(seed)
    names = ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
    adjs = ["small", "quick", "lazy", "bright", "quiet", "happy", "old", "new", "red", "green"]
    nouns = ["dog", "cat", "house", "river", "book", "garden", "number", "answer", "model", "question"]
    verbs = ["sees", "finds", "reads", "likes", "writes", "counts", "opens", "paints", "answers", "checks"]
    places = ["in the park", "at home", "by the river", "on the table", "in the morning", "after lunch"]
    fixed = [
        "The quick brown fox jumps over the lazy dog.",
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        "You are a helpful assistant.",
        "Let's think step by step.",
        "The answer is",
        "Hello, world! How are you today?",
        "I'm fine, thanks. We'll see what they've done.",
        "héllo → 世界, café, naïve, 😀 🙂",
        "def add(a, b):\n    return a + b\n",
        "for i in range(10):\n    print(i)\n",
    ]
    lines = list(fixed) * 3
    for _ in range(600):
        lines.append(
            f"{rng.choice(names)} {rng.choice(verbs)} the {rng.choice(adjs)} {rng.choice(nouns)} "
            f"{rng.choice(places)}."
        )
    for _ in range(800):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(["+", "-", "*"])
        r = a + b if op == "+" else a - b if op == "-" else a * b
        lines.append(f"What is {a} {op} {b}? {a} {op} {b} = {r}. The answer is {r}.")
    for _ in range(300):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        lines.append(f"user\nWhat is {a} + {b}?\nassistant\n{a} + {b} = {a + b}. The answer is {a + b}.\n")
        lines.append(f"system\nYou are a helpful assistant.\nuser\nHi {rng.choice(names)}!\n")
    rng.shuffle(lines)
    return lines


def train_tokenizer(fam, corpus):
    """Byte-level BPE in the style of Qwen2 (fam='qwen') or Llama 3 (fam='llama')."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    if fam == "qwen":
        tok.normalizer = normalizers.NFC()
    regex = QWEN_REGEX if fam == "qwen" else LLAMA_REGEX
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=TRAIN_VOCAB,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    base = tok.get_vocab_size(with_added_tokens=False)
    # Added after training, so they sit after the BPE vocabulary like Qwen's and Llama's do.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    if fam == "qwen":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, ids[bos])]
                ),
            ]
        )
    # Byte-level flags as in the real files (they change offsets only, never ids): Qwen2.5 has every
    # flag false; Llama 3 has trim_offsets false in the pre-tokenizer and post-processor, defaults
    # elsewhere, and ignore_merges true in the model.
    data = json.loads(tok.to_str())
    data["pre_tokenizer"]["pretokenizers"][1]["trim_offsets"] = False
    if fam == "qwen":
        data["post_processor"].update(add_prefix_space=False, trim_offsets=False, use_regex=False)
        data["decoder"].update(add_prefix_space=False, trim_offsets=False, use_regex=False)
    else:
        data["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(data))
    return tok, base, ids


def tokenizer_config(fam, ids, max_len):
    added = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIALS
    }
    if fam == "qwen":
        return {
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "bos_token": None,
            "chat_template": QWEN25_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": max_len,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        }
    return {
        "added_tokens_decoder": added,
        "bos_token": "<|begin_of_text|>",
        "chat_template": LLAMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": max_len,
        "pad_token": "<|end_of_text|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def token_ids_for_config(fam, ids):
    """(bos, eos for config.json, eos list for generation_config.json, pad for generation_config)."""
    if fam == "qwen":
        return ids["<|endoftext|>"], ids["<|im_end|>"], [ids["<|im_end|>"], ids["<|endoftext|>"]], ids["<|endoftext|>"]
    eos = [ids["<|end_of_text|>"], ids["<|eot_id|>"]]
    return ids["<|begin_of_text|>"], eos, eos, None


def generation_config_json(fam, ids):
    bos, _, eos_list, pad = token_ids_for_config(fam, ids)
    out = {"bos_token_id": bos, "eos_token_id": eos_list}
    if pad is not None:
        out["pad_token_id"] = pad
    try:
        import transformers

        out["transformers_version"] = transformers.__version__
    except Exception:  # noqa: BLE001
        pass
    return out


def write_tokenizer_files(d, fam, tok, ids, max_len):
    tok.save(os.path.join(d, "tokenizer.json"), pretty=True)
    dump_json(os.path.join(d, "tokenizer_config.json"), tokenizer_config(fam, ids, max_len))
    # Written after save_pretrained so it replaces the one transformers derived from config.json.
    dump_json(os.path.join(d, "generation_config.json"), generation_config_json(fam, ids))


# --- configs ---------------------------------------------------------------------------------------


def make_config(arch, vocab, ids):
    import transformers

    fam = family(arch)
    bos, eos, _, _ = token_ids_for_config(fam, ids)
    kw = dict(COMMON_DIMS, vocab_size=vocab, bos_token_id=bos, eos_token_id=eos)
    if arch == "qwen3":
        cls = transformers.Qwen3Config
        kw.update(head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
                  use_sliding_window=False)
    elif arch == "qwen2":
        cls = transformers.Qwen2Config  # head_dim = hidden / heads = 16; q/k/v biases are always on
        kw.update(rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False)
    else:
        cls = transformers.LlamaConfig
        kw.update(head_dim=16, rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=False,
                  mlp_bias=False)
    rope = dict(ROPE[arch])
    try:  # transformers 5: one dict, rope_theta inside
        cfg = cls(**kw, rope_parameters=dict(rope))
    except TypeError:  # transformers 4: rope_theta + rope_scaling
        theta = rope.pop("rope_theta")
        cfg = cls(**kw, rope_theta=theta, rope_scaling=(None if rope["rope_type"] == "default" else rope))
    cfg.architectures = [{"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[arch]]
    check_config(arch, cfg, vocab)
    return cfg


def rope_of(cfg):
    """(theta, scaling dict or None) from a config object of transformers 4 or 5."""
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and rp:
        theta = rp.get("rope_theta", getattr(cfg, "rope_theta", None))
        scaling = {k: v for k, v in rp.items() if k != "rope_theta"}
        if scaling.get("rope_type", scaling.get("type", "default")) == "default":
            scaling = None
        return theta, scaling
    return getattr(cfg, "rope_theta", None), getattr(cfg, "rope_scaling", None)


def check_config(arch, cfg, vocab):
    want = dict(COMMON_DIMS, vocab_size=vocab)
    for k, v in want.items():
        if getattr(cfg, k) != v:
            problem(f"{arch}: config", f"{k} = {getattr(cfg, k)!r}, wanted {v!r}")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if head_dim != 16:
        problem(f"{arch}: config", f"head_dim {head_dim}, wanted 16")
    theta, scaling = rope_of(cfg)
    want_rope = dict(ROPE[arch])
    if theta != want_rope.pop("rope_theta"):
        problem(f"{arch}: config", f"rope theta {theta}")
    if want_rope["rope_type"] == "default":
        if scaling:
            problem(f"{arch}: config", f"unexpected rope scaling {scaling}")
    else:
        got = {k: v for k, v in (scaling or {}).items() if k != "type"}
        if got != want_rope:
            problem(f"{arch}: config", f"rope scaling {got}, wanted {want_rope}")
    if getattr(cfg, "sliding_window", None) is not None and getattr(cfg, "use_sliding_window", False):
        problem(f"{arch}: config", "sliding window is on")


def legacy_config_json(arch, path):
    """Rewrite a transformers-5 config.json in the older Hub style (rope_theta/rope_scaling/torch_dtype)."""
    with open(path, encoding="utf-8") as f:
        c = json.load(f)
    if "rope_parameters" in c:
        rp = dict(c.pop("rope_parameters") or {})
        c["rope_theta"] = rp.pop("rope_theta", c.get("rope_theta"))
        c["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    if arch == "qwen2":
        c.pop("layer_types", None)
        c["use_sliding_window"] = False
        c["sliding_window"] = QWEN2_DECOY_SLIDING_WINDOW
    dump_json(path, dict(sorted(c.items())))


# --- models ----------------------------------------------------------------------------------------


def expected_param_shapes(arch, vocab):
    H, inter, L, nh, nkv, hd = 64, 128, 2, 4, 2, 16
    shapes = {"model.embed_tokens.weight": [vocab, H], "model.norm.weight": [H]}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": [H],
                p + "post_attention_layernorm.weight": [H],
                p + "self_attn.q_proj.weight": [nh * hd, H],
                p + "self_attn.k_proj.weight": [nkv * hd, H],
                p + "self_attn.v_proj.weight": [nkv * hd, H],
                p + "self_attn.o_proj.weight": [H, nh * hd],
                p + "mlp.gate_proj.weight": [inter, H],
                p + "mlp.up_proj.weight": [inter, H],
                p + "mlp.down_proj.weight": [H, inter],
            }
        )
        if arch == "qwen3":
            shapes[p + "self_attn.q_norm.weight"] = [hd]
            shapes[p + "self_attn.k_norm.weight"] = [hd]
        if arch == "qwen2":
            shapes[p + "self_attn.q_proj.bias"] = [nh * hd]
            shapes[p + "self_attn.k_proj.bias"] = [nkv * hd]
            shapes[p + "self_attn.v_proj.bias"] = [nkv * hd]
    if arch != "qwen3":
        shapes["lm_head.weight"] = [vocab, H]
    return shapes


def build_model(arch, cfg, seed):
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    except TypeError:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32)
    model.config._attn_implementation = "eager"
    if getattr(model.config, "_attn_implementation", None) != "eager":
        problem(f"{arch}: build", f"attention implementation is {model.config._attn_implementation}")
    model = model.to("cpu", torch.float32).eval()

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                v = 1.0 + NORM_JITTER * torch.randn(p.shape, generator=g)
            elif name.endswith(".bias"):
                v = BIAS_STD * torch.randn(p.shape, generator=g)
            elif name.endswith("embed_tokens.weight"):
                v = EMBED_STD * torch.randn(p.shape, generator=g)
            else:
                v = LINEAR_STD * torch.randn(p.shape, generator=g)
            p.copy_(v.to(p.dtype))

    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if tied != (arch == "qwen3"):
        problem(f"{arch}: build", f"lm_head tied to embed_tokens: {tied}, wanted {arch == 'qwen3'}")
    names = dict(model.named_parameters())
    want = expected_param_shapes(arch, cfg.vocab_size)
    if set(names) != set(want):
        problem(f"{arch}: build", f"parameters differ: extra {sorted(set(names) - set(want))}, "
                f"missing {sorted(set(want) - set(names))}")
    for k, shape in want.items():
        if k in names and list(names[k].shape) != shape:
            problem(f"{arch}: build", f"{k} has shape {list(names[k].shape)}, wanted {shape}")
        if k in names and names[k].dtype != torch.float32:
            problem(f"{arch}: build", f"{k} is {names[k].dtype}")
    if arch == "qwen2":
        for k, p in names.items():
            if k.endswith(".bias") and float(p.detach().abs().min()) == 0.0:
                problem(f"{arch}: build", f"{k} has zeros")
    return model


def forward_with_hiddens(model, input_ids):
    """Logits and hidden states captured with hooks (independent of output_hidden_states semantics)."""
    import torch

    inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    captured = {}

    def hook(name):
        def fn(_mod, _inp, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            captured[name] = t.detach().clone()

        return fn

    handles = [inner.embed_tokens.register_forward_hook(hook("hidden.embed"))]
    for i, layer in enumerate(inner.layers):
        handles.append(layer.register_forward_hook(hook(f"hidden.layer.{i}")))
    handles.append(inner.norm.register_forward_hook(hook("hidden.final_norm")))
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out.logits.detach().float().clone(), captured


def plain_logits(model, input_ids):
    import torch

    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits.float()


def manual_greedy(model, prompt, n):
    import torch

    seq = prompt.clone()
    margins = []
    for _ in range(n):
        last = plain_logits(model, seq)[0, -1]
        top = torch.topk(last, 2)
        margins.append(float(top.values[0] - top.values[1]))
        seq = torch.cat([seq, top.indices[:1].view(1, 1)], dim=1)
    return seq[:, prompt.shape[1]:], min(margins)


def hf_generate(model, prompt, n):
    import torch

    try:  # no EOS stop, no processors, pure argmax
        model.generation_config.eos_token_id = None
        model.generation_config.forced_eos_token_id = None
    except Exception:  # noqa: BLE001
        pass
    kwargs = dict(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        num_beams=1,
        max_new_tokens=n,
        min_new_tokens=None,
        eos_token_id=None,
        pad_token_id=None,
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=None,
    )
    with torch.no_grad():
        try:
            out = model.generate(**kwargs)
        except (TypeError, ValueError) as e:
            log(f"generate() with explicit sampling Nones failed ({e}); retrying with fewer arguments")
            for k in ("min_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"):
                kwargs.pop(k)
            out = model.generate(**kwargs)
    seqs = out.sequences if hasattr(out, "sequences") else out
    return seqs[:, prompt.shape[1]:]


def choose_greedy_prompt(arch, model, vocab, rng_seed):
    import torch

    g = torch.Generator().manual_seed(rng_seed)
    best, best_key = None, None
    for attempt in range(200):
        prompt = torch.randint(0, vocab, (1, PROMPT_LEN), generator=g, dtype=torch.int64)
        toks, margin = manual_greedy(model, prompt, NEW_TOKENS)
        distinct = len(set(toks[0].tolist()))
        key = (min(distinct, MIN_GREEDY_DISTINCT), margin)
        if best is None or key > best_key:
            best, best_key = (prompt, toks, margin, attempt, distinct), key
        if margin >= MIN_GREEDY_MARGIN and distinct >= MIN_GREEDY_DISTINCT:
            break
    prompt, toks, margin, attempt, distinct = best
    log(f"greedy prompt {prompt.tolist()} (candidate {attempt}), min top-1/top-2 margin {margin:.4g}, "
        f"{distinct} distinct tokens")
    if margin < MIN_GREEDY_MARGIN or distinct < MIN_GREEDY_DISTINCT:
        problem(f"{arch}: greedy", f"no prompt with margin >= {MIN_GREEDY_MARGIN} and >= {MIN_GREEDY_DISTINCT} "
                f"distinct tokens; best: margin {margin:.3g}, {distinct} distinct")
    return prompt, toks, margin


# --- an independent float64 reference of the decoder (documents the math the Rust side must match) --


def reference_inv_freq(head_dim, theta, scaling):
    inv = [1.0 / theta ** (i / head_dim) for i in range(0, head_dim, 2)]
    if not scaling:
        return inv
    rt = scaling.get("rope_type", scaling.get("type"))
    if rt != "llama3":
        raise ValueError(f"reference has no rope_type {rt}")
    factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    low_wl, high_wl = old / lo, old / hi
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(f)
        elif wl > low_wl:
            out.append(f / factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
    return out


def reference_forward(arch, state, cfg, input_ids):
    """Pure-torch float64 decoder: RMSNorm, half-split RoPE, GQA, causal softmax attention, SwiGLU."""
    import torch

    d = {k: v.detach().to(torch.float64) for k, v in state.items()}
    H, nh, nkv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or H // nh
    eps = cfg.rms_norm_eps
    theta, scaling = rope_of(cfg)
    B, T = input_ids.shape

    def rms(x, w):
        return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))

    def lin(x, name):
        y = x @ d[name + ".weight"].T
        return y + d[name + ".bias"] if name + ".bias" in d else y

    inv = torch.tensor(reference_inv_freq(hd, theta, scaling), dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)[None, :, None, :]  # [1, T, 1, hd]
    sin = torch.cat([ang.sin(), ang.sin()], -1)[None, :, None, :]

    def rope(x):  # x [B, T, heads, hd]; rotate_half pairs i with i + hd/2
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    hid = {}
    x = d["model.embed_tokens.weight"][input_ids]
    hid["hidden.embed"] = x
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        h = rms(x, d[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").view(B, T, nh, hd)
        k = lin(h, p + "self_attn.k_proj").view(B, T, nkv, hd)
        v = lin(h, p + "self_attn.v_proj").view(B, T, nkv, hd)
        if arch == "qwen3":  # per-head RMSNorm on q and k, before RoPE
            q = rms(q, d[p + "self_attn.q_norm.weight"])
            k = rms(k, d[p + "self_attn.k_norm.weight"])
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(nh // nkv, dim=2)  # query head j uses kv head j // (nh / nkv)
        v = v.repeat_interleave(nh // nkv, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd)
        s = s.masked_fill(causal, float("-inf"))
        a = torch.softmax(s, dim=-1)
        o = torch.einsum("bhts,bshd->bthd", a, v).reshape(B, T, nh * hd)
        x = x + lin(o, p + "self_attn.o_proj")
        h = rms(x, d[p + "post_attention_layernorm.weight"])
        m = lin(torch.nn.functional.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        x = x + m
        hid[f"hidden.layer.{i}"] = x
    x = rms(x, d["model.norm.weight"])
    hid["hidden.final_norm"] = x
    w = d.get("lm_head.weight", d["model.embed_tokens.weight"])
    return x @ w.T, hid, inv


# --- per-architecture pipeline ---------------------------------------------------------------------


def max_diff(a, b):
    return float((a.double() - b.double()).abs().max())


def run_arch(arch, out_dir, toks, seed, manifest):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    fam = family(arch)
    tok, ids = toks[fam]
    vocab = tok.get_vocab_size(with_added_tokens=True)
    d = os.path.join(out_dir, arch)
    info = {"dir": arch, "vocab_size": vocab}
    manifest["models"][arch] = info
    arch_seed = seed + {"qwen3": 1, "qwen2": 2, "llama": 3}[arch]

    with stage(f"{arch}: config and model"):
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        cfg = make_config(arch, vocab, ids)
        model = build_model(arch, cfg, arch_seed * 1000)
        log(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters())} parameters, "
            f"attn={model.config._attn_implementation}, V={vocab}")
    if "model" not in locals():
        return

    exp = {}
    with stage(f"{arch}: reference forward"):
        g = torch.Generator().manual_seed(arch_seed * 1000 + 7)
        input_ids = torch.randint(0, vocab, (SEQ_BATCH, SEQ_LEN), generator=g, dtype=torch.int64)
        logits, hid = forward_with_hiddens(model, input_ids)
        assert logits.shape == (SEQ_BATCH, SEQ_LEN, vocab), logits.shape
        assert set(hid) == {"hidden.embed", "hidden.final_norm"} | {f"hidden.layer.{i}" for i in range(2)}, sorted(hid)
        exp["input_ids"] = input_ids
        exp["logits"] = logits
        exp.update({k: v.float() for k, v in hid.items()})
        inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        exp["rope_inv_freq"] = inner.rotary_emb.inv_freq.detach().float().clone()
        scaling_attr = getattr(inner.rotary_emb, "attention_scaling", 1.0)
        if float(scaling_attr) != 1.0:
            problem(f"{arch}: reference forward", f"rotary attention_scaling is {scaling_attr}, expected 1.0")
        log(f"logits: mean {float(logits.mean()):.4f} std {float(logits.std()):.4f} "
            f"max|.| {float(logits.abs().max()):.4f}")
        if float(logits.std()) < 0.1:
            problem(f"{arch}: reference forward", f"logits are nearly constant (std {float(logits.std()):.3g})")
        # Batch rows must be independent (no mask or position mix-up across the batch).
        row1 = plain_logits(model, input_ids[1:2])
        dd = max_diff(row1[0], logits[1])
        if dd > 1e-5:
            problem(f"{arch}: reference forward", f"row 1 alone differs from row 1 in the batch by {dd:.3g}")

    with stage(f"{arch}: independent float64 reference"):
        ref_logits, ref_hid, ref_inv = reference_forward(arch, model.state_dict(), model.config, exp["input_ids"])
        d_inv = max_diff(ref_inv, exp["rope_inv_freq"])
        d_log = max_diff(ref_logits, exp["logits"])
        d_hid = {k: max_diff(ref_hid[k], exp[k]) for k in ref_hid}
        hid_txt = ", ".join(f"{k} {v:.3g}" for k, v in d_hid.items())
        log(f"vs HF: inv_freq {d_inv:.3g}, logits {d_log:.3g}, hidden {hid_txt}")
        info["max_diff_vs_float64_reference"] = d_log
        if d_inv > 1e-6 * float(ref_inv.abs().max()) + 1e-9 or d_log > CHECK_TOL or max(d_hid.values()) > CHECK_TOL:
            problem(f"{arch}: independent reference",
                    f"the float64 reference disagrees with transformers (logits {d_log:.3g}); "
                    "the fixture is still transformers' output, but the documented math is off")

    with stage(f"{arch}: greedy generation"):
        prompt, manual_toks, margin = choose_greedy_prompt(arch, model, vocab, arch_seed * 1000 + 11)
        gen = hf_generate(model, prompt, NEW_TOKENS)
        log(f"generate(): {gen.tolist()}   manual argmax loop: {manual_toks.tolist()}")
        if gen.shape != (1, NEW_TOKENS):
            problem(f"{arch}: greedy generation", f"generate() returned {tuple(gen.shape)} new tokens (EOS stop?)")
        elif not torch.equal(gen, manual_toks):
            problem(f"{arch}: greedy generation", "generate() disagrees with the argmax loop; storing the loop's")
        full = torch.cat([prompt, manual_toks], dim=1)
        glog = plain_logits(model, full[:, :-1])[:, PROMPT_LEN - 1:]
        assert glog.shape == (1, NEW_TOKENS, vocab), glog.shape
        if not torch.equal(glog.argmax(-1), manual_toks):
            problem(f"{arch}: greedy generation", "argmax of the full-forward logits differs from the greedy tokens")
        exp["greedy_prompt"] = prompt
        exp["greedy_tokens"] = manual_toks if gen.shape != (1, NEW_TOKENS) else gen
        exp["greedy_logits"] = glog.clone()
        info["greedy_min_margin"] = margin

    with stage(f"{arch}: save checkpoint and tokenizer"):
        try:
            model.save_pretrained(d, safe_serialization=True)
        except TypeError:
            model.save_pretrained(d)
        for stray in ("chat_template.jinja", "special_tokens_map.json"):
            if os.path.exists(os.path.join(d, stray)):
                os.remove(os.path.join(d, stray))
        write_tokenizer_files(d, fam, tok, ids, cfg.max_position_embeddings)
        cfg_path = os.path.join(d, "config.json")
        v5_config = open(cfg_path, encoding="utf-8").read()
        if LEGACY_STYLE[arch]:
            legacy_config_json(arch, cfg_path)
        info["config_style"] = (
            "legacy (rope_theta/rope_scaling/torch_dtype)" if LEGACY_STYLE[arch]
            else "transformers 5 (rope_parameters/dtype)"
        )
        st_path = os.path.join(d, "model.safetensors")
        if not os.path.exists(st_path):
            raise RuntimeError(f"save_pretrained wrote no model.safetensors: {sorted(os.listdir(d))}")
        with safe_open(st_path, framework="pt") as f:
            saved = {k: (list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
        want = expected_param_shapes(arch, vocab)
        if set(saved) != set(want):
            problem(f"{arch}: saved tensors", f"names differ from the documented ones: extra "
                    f"{sorted(set(saved) - set(want))}, missing {sorted(set(want) - set(saved))}")
        for k, (shape, dt) in saved.items():
            if dt != "F32":
                problem(f"{arch}: saved tensors", f"{k} is {dt}")
            if k in want and shape != want[k]:
                problem(f"{arch}: saved tensors", f"{k} shape {shape}, wanted {want[k]}")
        info["tensors"] = {k: {"shape": s, "dtype": t} for k, (s, t) in sorted(saved.items())}
        log(f"model.safetensors: {len(saved)} tensors")
        for k, (s, t) in sorted(saved.items()):
            log(f"  {k:48s} {t} {s}")

    with stage(f"{arch}: reload with from_pretrained and compare"):
        def reload(attn):
            try:
                return AutoModelForCausalLM.from_pretrained(d, attn_implementation=attn, dtype=torch.float32,
                                                            output_loading_info=True)
            except TypeError:
                return AutoModelForCausalLM.from_pretrained(d, attn_implementation=attn, torch_dtype=torch.float32,
                                                            output_loading_info=True)

        try:
            m2, linfo = reload("eager")
        except Exception as e:  # noqa: BLE001
            if not LEGACY_STYLE[arch]:
                raise
            problem(f"{arch}: reload", f"legacy config.json failed to load ({e}); writing the transformers 5 one")
            with open(cfg_path, "w", encoding="utf-8") as f:
                f.write(v5_config)
            info["config_style"] = "transformers 5 (rope_parameters/dtype)"
            m2, linfo = reload("eager")
        m2 = m2.to("cpu", torch.float32).eval()
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            if linfo.get(key):
                problem(f"{arch}: reload", f"{key}: {linfo[key]}")
        check_config(arch, m2.config, vocab)
        if m2.config._attn_implementation != "eager":
            problem(f"{arch}: reload", f"reloaded attention is {m2.config._attn_implementation}")
        l2 = plain_logits(m2, exp["input_ids"])
        dd = max_diff(l2, exp["logits"])
        log(f"reloaded eager logits vs fixture: max |diff| {dd:.3g}")
        info["max_diff_reload_eager"] = dd
        if dd > 1e-6:
            problem(f"{arch}: reload", f"reloaded model's logits differ by {dd:.3g}")
        inner2 = m2.get_decoder() if hasattr(m2, "get_decoder") else m2.model
        di = max_diff(inner2.rotary_emb.inv_freq.float(), exp["rope_inv_freq"])
        if di > 0:
            problem(f"{arch}: reload", f"reloaded rope inv_freq differs by {di:.3g}")
        g2 = hf_generate(m2, exp["greedy_prompt"], NEW_TOKENS)
        if not torch.equal(g2, exp["greedy_tokens"]):
            problem(f"{arch}: reload", f"reloaded generate() gives {g2.tolist()}")
        try:
            m3, _ = reload("sdpa")
            d3 = max_diff(plain_logits(m3.to("cpu", torch.float32).eval(), exp["input_ids"]), exp["logits"])
            log(f"(for reference) sdpa logits vs eager fixture: max |diff| {d3:.3g}")
            info["max_diff_sdpa_vs_eager"] = d3
        except Exception as e:  # noqa: BLE001
            log(f"(sdpa comparison skipped: {e})")

    with stage(f"{arch}: write expected.safetensors"):
        required = {"input_ids", "logits", "hidden.embed", "hidden.final_norm", "rope_inv_freq", "greedy_prompt",
                    "greedy_tokens", "greedy_logits"} | {f"hidden.layer.{i}" for i in range(2)}
        if required - set(exp):
            raise RuntimeError(f"not written: an earlier stage failed, {sorted(required - set(exp))} missing")
        for k in ("input_ids", "greedy_prompt", "greedy_tokens"):
            exp[k] = exp[k].to(torch.int64).contiguous()
        for k in list(exp):
            if k not in ("input_ids", "greedy_prompt", "greedy_tokens"):
                exp[k] = exp[k].to(torch.float32).contiguous()
        meta = {
            "arch": arch,
            "seed": str(seed),
            "vocab_size": str(vocab),
            "attn_implementation": "eager",
            "device": "cpu",
            "dtype": "float32",
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "greedy": "do_sample=False, max_new_tokens=10, eos_token_id=None; greedy_tokens are new tokens only",
        }
        path = os.path.join(d, "expected.safetensors")
        # One metadata key: safetensors writes several in a random order, which would make the file's
        # bytes change from run to run.
        save_file(exp, path, metadata={"forge_fixture": json.dumps(meta, sort_keys=True)})
        back = load_file(path)
        for k, v in exp.items():
            if not torch.equal(back[k], v):
                problem(f"{arch}: expected.safetensors", f"{k} does not read back equal")
        info["expected"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                            for k, v in sorted(exp.items())}
        for k, v in sorted(exp.items()):
            log(f"  {k:20s} {str(v.dtype):14s} {list(v.shape)}")

    if arch in ("qwen3", "llama"):
        with stage(f"{arch}: chat and tokenize cases"):
            write_text_cases(arch, d, manifest)


# --- chat template and tokenizer fixtures (transformers + tokenizers, no torch needed) ---------------


def write_text_cases(arch, d, manifest):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(d)
    log(f"AutoTokenizer -> {type(hf).__name__}, len {len(hf)}")
    if len(hf) != raw.get_vocab_size(with_added_tokens=True):
        problem(f"{arch}: tokenizer", f"AutoTokenizer has {len(hf)} tokens, tokenizer.json {raw.get_vocab_size(True)}")
    for t in SPECIALS:
        if hf.convert_tokens_to_ids(t) != raw.token_to_id(t):
            problem(f"{arch}: tokenizer",
                    f"{t}: AutoTokenizer id {hf.convert_tokens_to_ids(t)}, raw {raw.token_to_id(t)}")

    def enc(text, special):
        a = list(hf(text, add_special_tokens=special)["input_ids"])
        b = raw.encode(text, add_special_tokens=special).ids
        if a != b:
            problem(f"{arch}: tokenizer", f"AutoTokenizer and tokenizer.json disagree on {text!r}: {a} vs {b}")
        return a

    cases = []
    for c in CHAT_CASES:
        text = hf.apply_chat_template(c["messages"], tokenize=False, add_generation_prompt=c["add_generation_prompt"])
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text)}")
        ids = enc(text, False)
        via = hf.apply_chat_template(c["messages"], tokenize=True, add_generation_prompt=c["add_generation_prompt"])
        if hasattr(via, "keys") and "input_ids" in via:
            via = via["input_ids"]
        if via and isinstance(via[0], list):
            via = via[0]
        if list(via) != ids:
            problem(f"{arch}: chat", f"{c['name']}: apply_chat_template(tokenize=True) gives {list(via)}, "
                    f"tokenizing the text gives {ids}")
        dec = hf.decode(ids, skip_special_tokens=False)
        if dec != text:
            problem(f"{arch}: chat", f"{c['name']}: decode(ids) != text: {dec!r}")
        cases.append({"name": c["name"], "messages": c["messages"],
                      "add_generation_prompt": c["add_generation_prompt"], "text": text, "ids": ids})
        log(f"chat {c['name']}: {len(ids)} ids, text {text!r}")
    dump_json(os.path.join(d, "chat_cases.json"), cases)

    tcases = []
    for s in TOKENIZE_STRINGS:
        ids = enc(s, False)
        ids_sp = enc(s, True)
        dec = hf.decode(ids, skip_special_tokens=False)
        if raw.decode(ids, skip_special_tokens=False) != dec:
            problem(f"{arch}: tokenize", f"decode differs for {s!r}")
        if dec != s:
            problem(f"{arch}: tokenize", f"{s!r} does not round-trip: {dec!r}")
        tcases.append({"text": s, "ids": ids, "ids_with_special_tokens": ids_sp,
                       "tokens": raw.encode(s, add_special_tokens=False).tokens, "decoded": dec})
        log(f"tokenize {s!r}: {ids}")
    dump_json(os.path.join(d, "tokenize_cases.json"), tcases)
    manifest["models"].setdefault(arch, {})["text_cases"] = {"chat": len(cases), "tokenize": len(tcases)}


# --- modes -----------------------------------------------------------------------------------------


def versions():
    out = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "tokenizers", "safetensors"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def make_all(args):
    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)
    manifest = {
        "regenerate": "python3 scripts/make_tiny_checkpoints.py --out tests/fixtures/models",
        "seed": args.seed,
        "versions": versions(),
        "special_tokens": {},
        "models": {},
    }
    log(f"versions: {manifest['versions']}")
    try:
        import torch

        torch.manual_seed(args.seed)
        torch.set_num_threads(1)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except ImportError:
        if not args.tokenizer_only:
            log("torch is not importable: only --tokenizer-only can run here")
            PROBLEMS.append(("setup", "torch missing"))
            return
    random.seed(args.seed)

    toks = {}
    with stage("tokenizers", fatal=True):
        corpus = build_corpus(args.seed)
        for fam in ("qwen", "llama"):
            tok, base, ids = train_tokenizer(fam, corpus)
            tok2, _, _ = train_tokenizer(fam, corpus)
            if tok.to_str() != tok2.to_str():
                problem("tokenizers", f"{fam}: BPE training is not deterministic")
            V = tok.get_vocab_size(with_added_tokens=True)
            log(f"{fam}: {len(corpus)} corpus lines, BPE vocab {base}, with specials V = {V}; specials {ids}")
            if base != TRAIN_VOCAB:
                problem("tokenizers", f"{fam}: trained vocab {base}, wanted {TRAIN_VOCAB} (corpus too small?)")
            if sorted(ids.values()) != list(range(base, base + len(SPECIALS))):
                problem("tokenizers", f"{fam}: special ids {ids} are not {base}..{base + len(SPECIALS) - 1}")
            toks[fam] = (tok, ids)
            manifest["special_tokens"][fam] = ids
            manifest.setdefault("tokenizer_vocab_size", {})[fam] = V

    if args.tokenizer_only:
        import transformers

        for arch in args.archs:
            fam = family(arch)
            tok, ids = toks[fam]
            d = os.path.join(out_dir, arch)
            with stage(f"{arch}: tokenizer files only"):
                if os.path.isdir(d):
                    shutil.rmtree(d)
                os.makedirs(d)
                cfg = make_config(arch, tok.get_vocab_size(with_added_tokens=True), ids)
                cfg.save_pretrained(d)
                write_tokenizer_files(d, fam, tok, ids, cfg.max_position_embeddings)
                if LEGACY_STYLE[arch]:
                    legacy_config_json(arch, os.path.join(d, "config.json"))
                transformers.AutoConfig.from_pretrained(d)
            if arch in ("qwen3", "llama"):
                with stage(f"{arch}: chat and tokenize cases"):
                    write_text_cases(arch, d, manifest)
    else:
        for arch in args.archs:
            run_arch(arch, out_dir, toks, args.seed, manifest)

    manifest["problems"] = [f"[{s}] {m}" for s, m in PROBLEMS]
    dump_json(os.path.join(out_dir, "manifest.json"), manifest)

    log("\n=== files written")
    total = 0
    for root, _dirs, files in sorted(os.walk(out_dir)):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            if os.path.relpath(p, out_dir).split(os.sep)[0] not in set(args.archs) | {"manifest.json"}:
                continue
            n = os.path.getsize(p)
            total += n
            log(f"  {n:9d}  {p}")
    log(f"  {total:9d}  bytes in all")
    if total > 2_000_000:
        problem("size", f"{total} bytes written, over the 2 MB budget")


def check_saved(args):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    exp = load_file(args.expected)
    for k in ("input_ids", "logits"):
        if k not in exp:
            log(f"{args.expected} has no '{k}'")
            return 2
    try:
        try:
            model, linfo = AutoModelForCausalLM.from_pretrained(
                args.check_saved, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
        except TypeError:
            model, linfo = AutoModelForCausalLM.from_pretrained(
                args.check_saved, attn_implementation="eager", torch_dtype=torch.float32, output_loading_info=True)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        log(f"FAIL: transformers could not load {args.check_saved}")
        return 2
    bad_load = False
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if linfo.get(key):
            log(f"FAIL: {key}: {linfo[key]}")
            bad_load = True
    model = model.to("cpu", torch.float32).eval()
    logits = plain_logits(model, exp["input_ids"].to(torch.int64))
    if logits.shape != exp["logits"].shape:
        log(f"FAIL: logits shape {tuple(logits.shape)}, expected {tuple(exp['logits'].shape)}")
        return 1
    diff = max_diff(logits, exp["logits"])
    log(f"max |logit diff| = {diff:.6g}  (tolerance {args.tol:g}, {type(model).__name__}, "
        f"{os.path.abspath(args.check_saved)} vs {os.path.abspath(args.expected)})")
    if "greedy_prompt" in exp and "greedy_tokens" in exp:
        g = hf_generate(model, exp["greedy_prompt"].to(torch.int64), exp["greedy_tokens"].shape[1])
        same = torch.equal(g, exp["greedy_tokens"].to(torch.int64))
        log(f"greedy tokens {'match' if same else 'DIFFER: ' + str(g.tolist())}")
    if bad_load or diff > args.tol or not math.isfinite(diff):
        log("FAIL")
        return 1
    log("OK")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/models", help="output folder (default %(default)s)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--tokenizer-only", action="store_true",
                    help="only tokenizer files, config.json and chat/tokenize cases (no torch needed)")
    ap.add_argument("--check-saved", metavar="DIR", help="a checkpoint folder written by Forge")
    ap.add_argument("--expected", metavar="PATH", help="expected.safetensors to compare --check-saved against")
    ap.add_argument("--tol", type=float, default=CHECK_TOL)
    args = ap.parse_args()
    if args.check_saved:
        if not args.expected:
            ap.error("--check-saved needs --expected")
        return check_saved(args)
    try:
        make_all(args)
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        PROBLEMS.append(("main", "unexpected error"))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
