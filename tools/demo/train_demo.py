#!/usr/bin/env python3
"""train_demo.py — trains the small demo model that ships in models/demo/.

What it does, in one run on the GPU machine (see models/README.md):
  1. collects the Python standard library's *.py files found on the machine
     (every directory that holds os.py under /usr/lib/python3.*, the running
     interpreter's stdlib, ...), one copy per relative path; 2% of the paths
     (by hash) are held out for validation;
  2. derives chat examples from the training files: for each public function
     with a docstring, "write me this function" -> the function's source, and
     "what does it do" -> its docstring summary, in ChatML;
  3. trains a byte-level BPE tokenizer (tokenizers) with <|endoftext|>,
     <|im_start|>, <|im_end|>;
  4. trains a Qwen3ForCausalLM (transformers) from scratch, bf16 autocast,
     AdamW + cosine schedule, stopping by wall clock / epoch budget, keeping
     the weights with the best validation loss;
  5. saves the float model (bf16, save_pretrained) and MLX affine-quantized
     copies (8-bit and 4-bit, group 64), written by this script;
  6. computes reference greedy continuations with transformers (float32,
     eager attention, on the CPU) on the float weights and on exactly the
     dequantized quantized weights, and writes reference.json beside each;
  7. tars everything into --out as <=15 MiB parts (the device tool's limit).

It does NOT need network access, and it never imports mlx: the MLX format is
written by hand (pack_bits / write_safetensors) and checked by --selftest.

  python3 train_demo.py --selftest             # packing/safetensors/corpus checks (torch + numpy only)
  python3 train_demo.py --smoke --out /tmp/s   # whole pipeline, tiny model, seconds
  python3 train_demo.py --out $OUT --budget 480
"""
import argparse
import ast
import glob
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import sysconfig
import tarfile
import textwrap
import time
import traceback

T0 = time.time()

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")
EOT, IM_START, IM_END = 0, 1, 2

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

# Prompts of the reference continuations (and the README's examples).
REF_PROMPTS = [
    dict(name="fibonacci", text="def fibonacci(n):\n", chat=False),
    dict(name="class", text="import os\n\n\nclass FileCache:\n    \"\"\"A cache of file contents.\"\"\"\n\n"
         "    def __init__(self, root):\n", chat=False),
    dict(name="chat_reverse", chat=True,
         messages=[{"role": "user", "content": "Write a Python function that reverses a list."}]),
]
N_REF = 48

GREETINGS = [
    (["Hello", "Hi", "Hello!", "Hi there", "Hey"],
     "Hello! I am the vllm.c demo model, a small language model trained on the Python standard "
     "library. Ask me to write a Python function."),
    (["Who are you?", "What are you?", "What is your name?"],
     "I am the vllm.c demo model: a tiny transformer trained for a few minutes on the source code "
     "of the Python standard library. I know some Python and very little else."),
    (["What can you do?", "Help", "How can you help me?"],
     "I can write small Python functions in the style of the standard library. Try: Write a Python "
     "function that returns the last line of a file."),
    (["Thanks", "Thank you", "Thank you!"], "You're welcome!"),
]


def log(*a):
    print("[%6.1fs]" % (time.time() - T0), *a, flush=True)


def sha(s):
    return hashlib.sha1(s.encode("utf-8", "surrogatepass")).hexdigest()


# ----------------------------------------------------------------------------
# corpus
# ----------------------------------------------------------------------------

def stdlib_dirs():
    """Directories that look like a Python standard library (hold os.py)."""
    cands = []
    pats = [sysconfig.get_paths().get("stdlib") or "",
            os.path.join(sys.base_prefix, "lib", "python%d.%d" % sys.version_info[:2]),
            "/usr/lib/python3*", "/usr/local/lib/python3*", "/opt/*/lib/python3*",
            "/root/.local/share/uv/python/*/lib/python3*", "/usr/local/python*/lib/python3*",
            "/opt/conda/lib/python3*", "/root/.pyenv/versions/*/lib/python3*"]
    for pat in pats:
        for p in sorted(glob.glob(pat)):
            rp = os.path.realpath(p)
            if os.path.isfile(os.path.join(rp, "os.py")) and rp not in cands:
                cands.append(rp)
    return cands


def keep_source(text):
    if not text.strip():
        return False
    lines = text.split("\n")
    if max(len(x) for x in lines) > 1000:
        return False
    long_ = sum(1 for x in lines if len(x) > 120)
    return long_ <= 0.05 * len(lines)


def site_dirs():
    """site-packages / dist-packages directories of the interpreters found."""
    out = []
    for d in stdlib_dirs() + [os.path.dirname(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))]:
        for sub in ("site-packages", "dist-packages", ""):
            p = os.path.realpath(os.path.join(d, sub)) if sub else os.path.realpath(d)
            if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p) and p not in out:
                out.append(p)
    for p in sys.path:
        rp = os.path.realpath(p)
        if os.path.basename(rp) in ("site-packages", "dist-packages") and os.path.isdir(rp) and rp not in out:
            out.append(rp)
    return out


def collect_corpus(max_files=None, max_bytes=300_000, site_mb=0):
    """[(relpath, text)] for every stdlib *.py file, one per relative path,
    then (site_mb > 0) installed packages' *.py files up to site_mb MB,
    test directories excluded."""
    dirs = stdlib_dirs()
    if site_mb > 0:
        dirs = dirs + site_dirs()
    log("stdlib directories:", dirs)
    seen_rel, seen_hash, out = set(), set(), []
    skipped = 0
    site_bytes = 0
    for d in dirs:
        is_site = os.path.basename(d) in ("site-packages", "dist-packages")
        if is_site and site_bytes >= site_mb * 1e6:
            break
        for root, dnames, fnames in os.walk(d):
            dnames[:] = sorted(x for x in dnames if x not in ("site-packages", "dist-packages", "__pycache__",
                                                               "tests", "test", "testing", "_vendor"))
            if is_site and site_bytes >= site_mb * 1e6:
                break
            for fn in sorted(fnames):
                if not fn.endswith(".py"):
                    continue
                path = os.path.join(root, fn)
                rel = os.path.relpath(path, d)
                if rel in seen_rel:
                    continue
                try:
                    if os.path.getsize(path) > max_bytes:
                        skipped += 1
                        continue
                    with open(path, "rb") as f:
                        text = f.read().decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    skipped += 1
                    continue
                text = text.replace("\r\n", "\n").replace("\r", "\n")
                h = sha(text)
                if h in seen_hash or not keep_source(text):
                    skipped += 1
                    continue
                seen_rel.add(rel)
                seen_hash.add(h)
                if is_site:
                    rel = "site/" + rel
                    site_bytes += len(text)
                out.append((rel, text))
                if max_files and len(out) >= max_files:
                    return out, dirs, skipped
    return out, dirs, skipped


def is_val(rel):
    return int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 50 == 0


def first_paragraph(doc):
    para = doc.strip().split("\n\n")[0]
    s = " ".join(para.split())
    return s


def functions_of(text):
    """(name, args, source, summary) of each public function with a docstring."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        seg = ast.get_source_segment(text, node)
        if not seg:
            continue
        src = textwrap.dedent(" " * node.col_offset + seg)
        nl = src.count("\n") + 1
        if nl < 3 or nl > 40 or len(src) > 2000:
            continue
        summary = first_paragraph(doc)
        if len(summary) < 12 or len(summary) > 200:
            continue
        if not summary.endswith("."):
            summary += "."
        try:
            args = ast.unparse(node.args)
        except Exception:  # noqa: BLE001
            args = ""
        if args.startswith("self, "):
            args = args[6:]
        elif args in ("self", "cls"):
            args = ""
        elif args.startswith("cls, "):
            args = args[5:]
        out.append((node.name, args, src, summary))
    return out


def chatml(turns):
    return "".join("<|im_start|>%s\n%s<|im_end|>\n" % (r, c) for r, c in turns)


def make_chat_docs(train_files, rng, greet_copies=60):
    """ChatML documents (strings with the special tokens spelled out)."""
    pairs = []
    texts = [t for _, t in train_files]
    try:
        import multiprocessing
        with multiprocessing.Pool(max(1, min(16, os.cpu_count() or 1))) as pool:
            found = pool.map(functions_of, texts, chunksize=8)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        found = [functions_of(t) for t in texts]
    for fl in found:
        for name, args, src, summary in fl:
            k = rng.random()
            code = "```python\n%s\n```" % src.rstrip("\n")
            if k < 0.2:
                req = "Write a Python function `%s(%s)`. %s" % (name, args, summary)
                resp = code
            elif k < 0.4:
                req = "Write a Python function that does this: %s" % summary
                resp = code
            elif k < 0.55:
                req = "%s Show me the Python code." % summary
                resp = code
            elif k < 0.7:
                req = "Implement `%s` in Python." % name
                resp = code
            elif k < 0.85:
                req = "Can you write `%s(%s)` in Python?" % (name, args)
                resp = "Here is one way:\n\n" + code
            else:
                req = "What does this code do?\n\n" + code
                resp = "`%s` — %s" % (name, summary)
            pairs.append((req, resp))
    greet = []
    for qs, a in GREETINGS:
        for _ in range(greet_copies):
            greet.append((rng.choice(qs), a))
    rng.shuffle(pairs)
    docs = []
    i = 0
    while i < len(pairs):
        n = rng.choice([1, 1, 2, 3])
        turns = []
        if greet and rng.random() < 0.15:
            q, a = greet.pop()
            turns += [("user", q), ("assistant", a)]
        for req, resp in pairs[i:i + n]:
            turns += [("user", req), ("assistant", resp)]
        i += n
        docs.append(chatml(turns))
    while greet:
        q, a = greet.pop()
        docs.append(chatml([("user", q), ("assistant", a)]))
    rng.shuffle(docs)
    return docs, len(pairs)


SPECIAL_RE = re.compile("|".join(re.escape(s) for s in SPECIALS))


# ----------------------------------------------------------------------------
# MLX affine quantization, written by hand
# ----------------------------------------------------------------------------

def quantize_affine(w, bits, group):
    """w: float tensor [out, in]. Returns (q int64 [out, in], scales, biases [out, in/group], both
    rounded to bfloat16 and returned as float32). scale = (max-min)/(2^bits-1), bias = min,
    q = round((w-bias)/scale) clamped to [0, 2^bits-1]; w ~ scale*q + bias."""
    import torch
    out_f, in_f = w.shape
    assert in_f % group == 0, (w.shape, group)
    g = w.float().reshape(out_f, in_f // group, group)
    mn = g.min(dim=-1).values
    mx = g.max(dim=-1).values
    n = (1 << bits) - 1
    scale = ((mx - mn) / n).to(torch.bfloat16).float()
    bias = mn.to(torch.bfloat16).float()
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round((g - bias[..., None]) / safe[..., None]).clamp_(0, n).to(torch.int64)
    q = torch.where(scale[..., None] == 0, torch.zeros_like(q), q)
    return q.reshape(out_f, in_f), scale, bias


def dequantize_affine(q, scale, bias, group):
    out_f, in_f = q.shape
    g = q.reshape(out_f, in_f // group, group).float()
    return (g * scale[..., None] + bias[..., None]).reshape(out_f, in_f)


def pack_bits(q, bits):
    """q int64 [out, in] with values < 2^bits -> int64 [out, in*bits/32] holding uint32 words: a
    little-endian bit stream, element k at bits [k*bits, (k+1)*bits) of the row."""
    import torch
    out_f, in_f = q.shape
    assert (in_f * bits) % 32 == 0
    nw = in_f * bits // 32
    pos = torch.arange(in_f, dtype=torch.int64) * bits
    word = (pos // 32).expand(out_f, in_f)
    off = (pos % 32).expand(out_f, in_f)
    words = torch.zeros(out_f, nw + 1, dtype=torch.int64)
    words.scatter_add_(1, word, (q << off) & 0xFFFFFFFF)
    spill = (q >> (32 - off)) * ((off + bits) > 32).to(torch.int64)
    words.scatter_add_(1, (word + 1), spill)
    return words[:, :nw].contiguous()


def unpack_bits(words, bits, in_f):
    import torch
    out_f = words.shape[0]
    pos = torch.arange(in_f, dtype=torch.int64) * bits
    word = pos // 32
    off = pos % 32
    w64 = torch.cat([words, torch.zeros(out_f, 1, dtype=torch.int64)], dim=1)
    lo = w64[:, word] >> off
    hi = w64[:, word + 1] << (32 - off)
    v = torch.where((off + bits) > 32, lo | hi, lo)
    return v & ((1 << bits) - 1)


def pack_bits_ref(row, bits):
    """Pure-Python reference of pack_bits for one row (tests)."""
    acc, nbits, out = 0, 0, []
    big = 0
    for k, v in enumerate(row):
        big |= int(v) << (k * bits)
    total = len(row) * bits
    for i in range(total // 32):
        out.append((big >> (32 * i)) & 0xFFFFFFFF)
    del acc, nbits
    return out


ST_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def tensor_bytes(t):
    """(dtype string, raw little-endian bytes) of a float torch tensor."""
    import torch
    t = t.contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return "BF16", t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.float16:
        return "F16", t.numpy().astype("<f2").tobytes()
    if t.dtype == torch.float32:
        return "F32", t.numpy().astype("<f4").tobytes()
    raise ValueError("unsupported dtype %s" % t.dtype)


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype_str, shape, bytes). Writes the safetensors layout: u64 header
    length, JSON header (padded with spaces to 8 bytes), data."""
    header = {}
    off = 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    if metadata:
        header["__metadata__"] = metadata
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(hj).to_bytes(8, "little"))
        f.write(hj)
        for _, _, _, data in tensors:
            f.write(data)


def read_safetensors_raw(path):
    """{name: (dtype, shape, bytes)} — our own reader, for checks."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for k, v in h.items():
            if k == "__metadata__":
                continue
            a, b = v["data_offsets"]
            f.seek(base + a)
            out[k] = (v["dtype"], v["shape"], f.read(b - a))
    return out


def quantizable(name, t, group):
    return name.endswith(".weight") and t.dim() == 2 and t.shape[-1] % group == 0 and "norm" not in name


def write_mlx_quantized(src_dir, dst_dir, state, bits, group):
    """state: {name: bf16 tensor} of the float model. Writes dst_dir/model.safetensors (+ config with
    quantization keys, copies of the other files) and returns {name: dequantized f32 weight}."""
    import numpy as np
    import torch
    os.makedirs(dst_dir, exist_ok=True)
    for fn in os.listdir(src_dir):
        if fn.endswith(".safetensors") or fn.endswith(".index.json") or fn == "reference.json":
            continue
        if os.path.isfile(os.path.join(src_dir, fn)):
            shutil.copy(os.path.join(src_dir, fn), os.path.join(dst_dir, fn))
    tensors, deq = [], {}
    float_dtype = None
    for name in sorted(state):
        t = state[name]
        if float_dtype is None and t.is_floating_point():
            float_dtype = t.dtype
        if quantizable(name, t, group):
            q, sc, bi = quantize_affine(t, bits, group)
            words = pack_bits(q, bits)
            assert torch.equal(unpack_bits(words, bits, t.shape[1]), q), name
            base = name[: -len(".weight")]
            wb = words.numpy().astype("<u4").tobytes()
            tensors.append((base + ".weight", "U32", list(words.shape), wb))
            dt, sb = tensor_bytes(sc.to(t.dtype))
            tensors.append((base + ".scales", dt, list(sc.shape), sb))
            dt, bb = tensor_bytes(bi.to(t.dtype))
            tensors.append((base + ".biases", dt, list(bi.shape), bb))
            deq[name] = dequantize_affine(q, sc, bi, group)
        else:
            dt, b = tensor_bytes(t)
            tensors.append((name, dt, list(t.shape), b))
            deq[name] = t.float()
    tensors.sort(key=lambda x: x[0])
    write_safetensors(os.path.join(dst_dir, "model.safetensors"), tensors, {"format": "mlx"})
    cfgp = os.path.join(dst_dir, "config.json")
    with open(cfgp) as f:
        cfg = json.load(f)
    cfg["quantization"] = {"group_size": group, "bits": bits}
    cfg["quantization_config"] = {"group_size": group, "bits": bits}
    with open(cfgp, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    # Round trip through our reader: codes and scales as written.
    raw = read_safetensors_raw(os.path.join(dst_dir, "model.safetensors"))
    for name in state:
        if quantizable(name, state[name], group):
            base = name[: -len(".weight")]
            dt, shape, b = raw[base + ".weight"]
            words = torch.from_numpy(np.frombuffer(b, dtype="<u4").astype(np.int64).reshape(shape))
            q = unpack_bits(words, bits, state[name].shape[1])
            sdt, sshape, sb = raw[base + ".scales"]
            bdt, bshape, bb = raw[base + ".biases"]
            sc = torch.from_numpy(np.frombuffer(sb, dtype="<i2").copy()).view(torch.bfloat16).float()
            bi = torch.from_numpy(np.frombuffer(bb, dtype="<i2").copy()).view(torch.bfloat16).float()
            d2 = dequantize_affine(q, sc.reshape(sshape), bi.reshape(bshape), group)
            assert torch.equal(d2, deq[name]), name
    return deq


# ----------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------

def train_tokenizer(texts, vocab_size):
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    # Qwen2's split regex: a newline run is its own piece, so "\n" and the
    # indentation after it are separate tokens (a prompt ending in "\n" then
    # looks like the training data); then byte-level without its own regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # Special tokens are not split out during training: train on text without them.
    tok.train_from_iterator((SPECIAL_RE.sub("\n", t) for t in texts), trainer=trainer, length=len(texts))
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def write_tokenizer_files(tok, d, max_len):
    tok.save(os.path.join(d, "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True} for i, s in enumerate(SPECIALS)},
    }
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def render_chat(messages, add_generation_prompt=True):
    s = chatml([(m["role"], m["content"]) for m in messages])
    return s + ("<|im_start|>assistant\n" if add_generation_prompt else "")


# ----------------------------------------------------------------------------
# model, training, references
# ----------------------------------------------------------------------------

def make_config(a, vocab):
    import transformers
    kw = dict(vocab_size=vocab, hidden_size=a.d_model, intermediate_size=a.d_ff, num_hidden_layers=a.n_layer,
              num_attention_heads=a.n_head, num_key_value_heads=a.n_kv_head, head_dim=a.d_model // a.n_head,
              max_position_embeddings=a.seq_len, rms_norm_eps=1e-6, tie_word_embeddings=True,
              bos_token_id=EOT, eos_token_id=IM_END, pad_token_id=EOT, use_cache=True,
              attention_dropout=0.0, initializer_range=0.02,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return transformers.Qwen3Config(**kw)


def build_model(config, attn):
    import torch
    import transformers
    try:
        m = transformers.Qwen3ForCausalLM._from_config(config, attn_implementation=attn, dtype=torch.float32)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        config._attn_implementation = attn
        m = transformers.Qwen3ForCausalLM(config)
    return m.to(torch.float32)


def batches_from_stream(stream, seq_len):
    """Non-overlapping windows of seq_len+1 tokens (validation)."""
    import torch
    n = (len(stream) - 1) // seq_len
    if n <= 0:
        return torch.zeros(0, seq_len + 1, dtype=torch.long)
    idx = torch.arange(n)[:, None] * seq_len + torch.arange(seq_len + 1)[None, :]
    return stream[idx]


def eval_loss(model, windows, dev, bs=16):
    import torch
    import torch.nn.functional as F
    model.eval()
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), bs):
            w = windows[i:i + bs].to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(input_ids=w[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                   reduction="sum")
            tot += float(loss)
            cnt += w[:, 1:].numel()
    model.train()
    return tot / max(1, cnt)


def eval_loss_f32(model, windows, dev, bs=16):
    """Validation loss in float32 (no autocast) — for comparing float vs quantized weights."""
    import torch
    import torch.nn.functional as F
    model.eval()
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), bs):
            w = windows[i:i + bs].to(dev)
            logits = model(input_ids=w[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                   reduction="sum")
            tot += float(loss)
            cnt += w[:, 1:].numel()
    return tot / max(1, cnt)


def greedy(model, prompt, n):
    """KV-cached greedy decoding, no EOS stop (as tools/fixtures/make_fixtures.py)."""
    import torch
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt], dtype=torch.long), use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].to(torch.float64)
        ids, margins, lps = [], [], []
        for step in range(n):
            lp = torch.log_softmax(logits, dim=-1)
            tok = int(torch.argmax(lp))
            top2 = torch.topk(lp, 2).values
            ids.append(tok)
            margins.append(float(top2[0] - top2[1]))
            lps.append(float(lp[tok]))
            if step == n - 1:
                break
            out = model(input_ids=torch.tensor([[tok]], dtype=torch.long), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].to(torch.float64)
    return ids, margins, lps


def seq_logprobs(model, ids):
    import torch
    with torch.no_grad():
        lg = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].to(torch.float64)
    lp = torch.log_softmax(lg, dim=-1)
    return [float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1)]


def ref_model(config, weights):
    """float32 eager model on the CPU holding exactly `weights` ({name: f32 tensor})."""
    import torch
    m = build_model(config, "eager")
    sd = m.state_dict()
    missing = [k for k in sd if k not in weights and not (k == "lm_head.weight")]
    assert not missing, missing
    with torch.no_grad():
        for k, v in sd.items():
            if k in weights:
                v.copy_(weights[k].float())
    if "lm_head.weight" in sd and "lm_head.weight" not in weights:
        assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    m.eval()
    return m


def compute_refs(config, weights, prompts, tok, n):
    m = ref_model(config, weights)
    cases = []
    for p in prompts:
        gids, margins, glps = greedy(m, p["ids"], n)
        lps = seq_logprobs(m, p["ids"] + gids)
        cases.append({"name": p["name"], "greedy_ids": gids, "greedy_margin": margins,
                      "greedy_text": tok.decode(gids, skip_special_tokens=False), "logprobs": lps})
    return m, cases


# ----------------------------------------------------------------------------
# self test (no transformers/tokenizers needed)
# ----------------------------------------------------------------------------

def selftest():
    import torch
    rng = random.Random(5)
    for bits in (2, 3, 4, 5, 6, 8):
        for in_f in (64, 128, 384):
            q = torch.tensor([[rng.randrange(1 << bits) for _ in range(in_f)] for _ in range(3)], dtype=torch.int64)
            w = pack_bits(q, bits)
            for r in range(3):
                assert w[r].tolist() == pack_bits_ref(q[r].tolist(), bits), (bits, in_f)
            assert torch.equal(unpack_bits(w, bits, in_f), q)
            assert int(w.max()) <= 0xFFFFFFFF and int(w.min()) >= 0
    # 4-bit: first word holds elements 0..7, element 0 in the low nibble
    q = torch.arange(8, dtype=torch.int64)[None, :].repeat(1, 8)
    assert pack_bits(q, 4)[0, 0].item() == 0x76543210
    q8 = torch.tensor([[1, 2, 3, 4] * 16], dtype=torch.int64)
    assert pack_bits(q8, 8)[0, 0].item() == 0x04030201
    # quantization error bound: |w - deq| <= scale/2 (+ bf16 rounding of scale/bias)
    torch.manual_seed(0)
    w = torch.randn(16, 128).to(torch.bfloat16)
    for bits in (4, 8):
        q, sc, bi = quantize_affine(w, bits, 64)
        d = dequantize_affine(q, sc, bi, 64)
        err = (d - w.float()).abs().reshape(16, 2, 64).amax(-1)
        assert bool((err <= sc * 0.5 + 0.02 * sc * (1 << bits) + 1e-3).all()), (bits, float(err.max()))
        assert int(q.min()) >= 0 and int(q.max()) <= (1 << bits) - 1
    # constant group -> scale 0, q 0, exact
    w = torch.full((2, 64), 0.5).to(torch.bfloat16)
    q, sc, bi = quantize_affine(w, 4, 64)
    assert torch.equal(dequantize_affine(q, sc, bi, 64), w.float())
    # safetensors writer + the quantized-directory writer round trip
    import tempfile
    with tempfile.TemporaryDirectory() as td:
        src = os.path.join(td, "src")
        os.makedirs(src)
        with open(os.path.join(src, "config.json"), "w") as f:
            json.dump({"architectures": ["Qwen3ForCausalLM"]}, f)
        state = {"model.embed_tokens.weight": torch.randn(10, 128).to(torch.bfloat16),
                 "model.norm.weight": torch.ones(128).to(torch.bfloat16),
                 "model.layers.0.mlp.down_proj.weight": torch.randn(128, 192).to(torch.bfloat16),
                 "model.layers.0.self_attn.q_norm.weight": torch.ones(64).to(torch.bfloat16)}
        deq = write_mlx_quantized(src, os.path.join(td, "q"), state, 4, 64)
        raw = read_safetensors_raw(os.path.join(td, "q", "model.safetensors"))
        assert raw["model.embed_tokens.weight"][0] == "U32" and raw["model.embed_tokens.weight"][1] == [10, 16]
        assert raw["model.embed_tokens.scales"][1] == [10, 2] and raw["model.embed_tokens.scales"][0] == "BF16"
        assert raw["model.layers.0.mlp.down_proj.biases"][1] == [128, 3]
        assert raw["model.norm.weight"][0] == "BF16" and "model.norm.scales" not in raw
        assert raw["model.layers.0.self_attn.q_norm.weight"][1] == [64]
        cfg = json.load(open(os.path.join(td, "q", "config.json")))
        assert cfg["quantization"] == {"group_size": 64, "bits": 4} == cfg["quantization_config"]
        assert set(deq) == set(state)
        with open(os.path.join(td, "q", "model.safetensors"), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            assert n % 8 == 0
    # corpus and chat samples
    files, dirs, skipped = collect_corpus(max_files=300)
    assert files, "no stdlib found"
    docs, npairs = make_chat_docs(files, random.Random(1), greet_copies=2)
    assert npairs > 10 and docs, npairs
    s = docs[0]
    assert s.startswith("<|im_start|>user\n") and s.endswith("<|im_end|>\n"), s[:200]
    assert render_chat([{"role": "user", "content": "x"}]) == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    print("selftest: %d files from %s (%d skipped), %d chat pairs; example:\n%s" % (
        len(files), dirs, skipped, npairs, docs[0][:600]))
    print("selftest OK")


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------

def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))


def package(work, out, parts_limit_mib=60):
    """Tar work/ into out/ as demo.tgz.NN parts of <= 15 MiB; the 4-bit copy only if all fits."""
    part = 15 * 1024 * 1024
    os.makedirs(out, exist_ok=True)
    main_items = [x for x in sorted(os.listdir(work)) if x != "demo-q4"]
    tgz = os.path.join(out, "demo.tgz")
    with tarfile.open(tgz, "w:gz", compresslevel=6) as tf:
        for x in main_items:
            tf.add(os.path.join(work, x), arcname=x)
    size = os.path.getsize(tgz)
    if os.path.isdir(os.path.join(work, "demo-q4")):
        with tarfile.open(os.path.join(out, "q4.tgz"), "w:gz", compresslevel=6) as tf:
            tf.add(os.path.join(work, "demo-q4"), arcname="demo-q4")
        s4 = os.path.getsize(os.path.join(out, "q4.tgz"))
        nparts = math.ceil(size / part) + math.ceil(s4 / part)
        if size + s4 > parts_limit_mib * 1024 * 1024 or nparts > 6:
            log("package: leaving the 4-bit copy out (%d + %d bytes)" % (size, s4))
            os.remove(os.path.join(out, "q4.tgz"))
    for fn in sorted(os.listdir(out)):
        p = os.path.join(out, fn)
        if fn.endswith(".tgz") and os.path.getsize(p) > part:
            with open(p, "rb") as f:
                i = 0
                while True:
                    b = f.read(part)
                    if not b:
                        break
                    with open("%s.%02d" % (p, i), "wb") as g:
                        g.write(b)
                    i += 1
            os.remove(p)
    for fn in sorted(os.listdir(out)):
        log("  out: %s %d bytes" % (fn, os.path.getsize(os.path.join(out, fn))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "demo-out"))
    ap.add_argument("--work", default=None, help="working directory (default: a temp dir)")
    ap.add_argument("--budget", type=float, default=450, help="seconds from start until the outputs are written")
    ap.add_argument("--post-reserve", type=float, default=90, help="seconds kept for saving/quantizing/refs")
    ap.add_argument("--max-epochs", type=float, default=30)
    ap.add_argument("--site-mb", type=float, default=60, help="MB of installed packages' source added to the stdlib")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--d-ff", type=int, default=1024)
    ap.add_argument("--n-layer", type=int, default=8)
    ap.add_argument("--n-head", type=int, default=6)
    ap.add_argument("--n-kv-head", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--eval-every", type=float, default=20, help="seconds between validation passes")
    ap.add_argument("--patience", type=int, default=5, help="validation passes without improvement before stopping")
    ap.add_argument("--bits", type=int, default=8, help="bits of the shipped copy (the other of 4/8 is also made)")
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--smoke", action="store_true", help="tiny model, few files, seconds (pipeline check)")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        selftest()
        return 0
    if a.smoke:
        a.vocab, a.d_model, a.d_ff, a.n_layer, a.n_head, a.n_kv_head = 512, 64, 128, 2, 2, 1
        a.seq_len, a.batch, a.budget, a.post_reserve, a.warmup, a.eval_every = 128, 8, 60, 40, 5, 3
        a.max_epochs = 1

    import tempfile
    work = a.work or tempfile.mkdtemp(prefix="demo-work-")
    os.makedirs(work, exist_ok=True)
    stats = {"args": vars(a)}

    # 1-2. corpus
    files, dirs, skipped = collect_corpus(max_files=200 if a.smoke else None, site_mb=0 if a.smoke else a.site_mb)
    train_files = [(r, t) for r, t in files if not is_val(r)]
    val_files = [(r, t) for r, t in files if is_val(r)]
    rng = random.Random(a.seed)
    chat_docs, npairs = make_chat_docs(train_files, rng)
    code_bytes = sum(len(t.encode()) for _, t in train_files)
    chat_bytes = sum(len(t.encode()) for t in chat_docs)
    val_bytes = sum(len(t.encode()) for _, t in val_files)
    log("corpus: %d files (%d train %.1f MB, %d val %.2f MB, %d skipped) from %s; chat: %d pairs, %d docs, %.1f MB"
        % (len(files), len(train_files), code_bytes / 1e6, len(val_files), val_bytes / 1e6, skipped, dirs,
           npairs, len(chat_docs), chat_bytes / 1e6))
    stats.update(stdlib_dirs=dirs, n_files=len(files), n_train_files=len(train_files), n_val_files=len(val_files),
                 train_code_bytes=code_bytes, chat_bytes=chat_bytes, val_bytes=val_bytes, chat_pairs=npairs,
                 chat_docs=len(chat_docs))

    import torch
    import tokenizers
    import transformers

    random.seed(a.seed)
    torch.manual_seed(a.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log("torch %s transformers %s tokenizers %s device %s%s" % (
        torch.__version__, transformers.__version__, tokenizers.__version__, dev,
        " (%s)" % torch.cuda.get_device_name(0) if dev.type == "cuda" else ""))

    # 3. tokenizer
    train_texts = [t for _, t in train_files] + chat_docs
    rng.shuffle(train_texts)
    tok = train_tokenizer(train_texts, a.vocab)
    vocab = tok.get_vocab_size()
    log("tokenizer: vocab %d" % vocab)

    def encode_docs(texts):
        ids = []
        for e in tok.encode_batch(texts, add_special_tokens=False):
            ids.extend(e.ids)
            ids.append(EOT)
        return torch.tensor(ids, dtype=torch.long)

    train_stream = encode_docs(train_texts)
    val_stream = encode_docs([t for _, t in val_files])
    stats.update(vocab=vocab, train_tokens=len(train_stream), val_tokens=len(val_stream),
                 bytes_per_token=(code_bytes + chat_bytes) / max(1, len(train_stream)))
    log("tokens: train %d (%.2f bytes/token), val %d" % (len(train_stream), stats["bytes_per_token"],
                                                         len(val_stream)))
    val_windows = batches_from_stream(val_stream, a.seq_len)[:96]
    if len(val_windows) == 0:
        val_windows = batches_from_stream(train_stream[-(a.seq_len * 4 + 1):], a.seq_len)

    # 4. model + training
    config = make_config(a, vocab)
    model = build_model(config, "sdpa").to(dev)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log("model: Qwen3ForCausalLM %d params (%.2fM), %d layers, d %d, ff %d, heads %d/%d" % (
        n_params, n_params / 1e6, a.n_layer, a.d_model, a.d_ff, a.n_head, a.n_kv_head))
    stats.update(params=n_params)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt_kw = dict(lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    try:
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                                fused=dev.type == "cuda", **opt_kw)
    except TypeError:
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                                **opt_kw)
    data = train_stream.to(dev)
    ar = torch.arange(a.seq_len + 1, device=dev)
    tokens_per_step = a.batch * a.seq_len
    epoch_steps = max(1, len(train_stream) // tokens_per_step)
    max_steps_epochs = max(10, int(a.max_epochs * epoch_steps))
    t_train0 = time.time()
    t_train_end = T0 + a.budget - a.post_reserve
    total_steps = max_steps_epochs  # refined after the first timed steps
    best = (float("inf"), None, 0)
    history = []
    step, bad, last_eval = 0, 0, time.time()
    train_loss_ema = None
    import torch.nn.functional as F
    t_step10 = None
    min_steps = 20
    while True:
        now = time.time()
        if step >= min_steps and (now >= t_train_end or step >= total_steps):
            break
        if step == 10:
            t_step10 = now
        if step == 30 and t_step10 is not None:
            per = (now - t_step10) / 20
            by_time = 30 + int((t_train_end - now) / per)
            total_steps = max(31, min(max_steps_epochs, by_time))
            log("step time %.1f ms (%.0f tok/s); planned steps %d (time allows %d, %.1f epochs cap %d)" % (
                per * 1e3, tokens_per_step / per, total_steps, by_time, a.max_epochs, max_steps_epochs))
            stats.update(step_ms=per * 1e3, tokens_per_s=tokens_per_step / per, planned_steps=total_steps)
        if step < a.warmup:
            lr = a.lr * (step + 1) / a.warmup
        else:
            frac = min(1.0, (step - a.warmup) / max(1, total_steps - a.warmup))
            lr = a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        off = torch.randint(0, len(data) - a.seq_len - 1, (a.batch,), device=dev)
        w = data[off[:, None] + ar[None, :]]
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model(input_ids=w[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == 1:
            lv = float(loss)
            train_loss_ema = lv if train_loss_ema is None else 0.9 * train_loss_ema + 0.1 * lv
            log("step %d loss %.4f lr %.2e" % (step, lv, lr))
        if time.time() - last_eval >= a.eval_every or step >= total_steps:
            vl = eval_loss(model, val_windows, dev)
            tl = float(loss)
            history.append({"step": step, "t": round(time.time() - t_train0, 1), "train": tl, "val": vl,
                            "epochs": step / epoch_steps})
            log("eval step %d (%.2f epochs): train %.4f val %.4f%s" % (
                step, step / epoch_steps, tl, vl, " *" if vl < best[0] else ""))
            if vl < best[0]:
                best = (vl, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, step)
                bad = 0
            else:
                bad += 1
                if bad >= a.patience:
                    log("validation loss has not improved for %d passes: stopping" % bad)
                    break
            last_eval = time.time()
    train_secs = time.time() - t_train0
    vl = eval_loss(model, val_windows, dev)
    history.append({"step": step, "t": round(train_secs, 1), "train": float(loss), "val": vl,
                    "epochs": step / epoch_steps})
    if vl < best[0] or best[1] is None:
        best = (vl, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, step)
    log("training: %d steps in %.1f s (%.2f epochs); best val %.4f at step %d" % (
        step, train_secs, step / epoch_steps, best[0], best[2]))
    # Train loss of the kept weights over the same number of windows as validation.
    model.load_state_dict(best[1])
    tr_windows = batches_from_stream(train_stream[: (len(val_windows) + 1) * a.seq_len + 1], a.seq_len)
    tr_windows = tr_windows[: max(1, len(val_windows))]
    best_train = eval_loss(model, tr_windows, dev)
    stats.update(steps=step, train_seconds=train_secs, epochs=step / epoch_steps, best_step=best[2],
                 best_val_loss=best[0], best_train_loss=best_train, tokens_seen=step * tokens_per_step,
                 history=history, train_loss_ema=train_loss_ema)
    del opt, data

    # 5. save: float (bf16) + quantized copies
    float_dir = os.path.join(work, "demo-float")
    model_bf16 = model.to("cpu").to(torch.bfloat16)
    model_bf16.save_pretrained(float_dir)
    gen = {"bos_token_id": EOT, "eos_token_id": [IM_END, EOT], "pad_token_id": EOT,
           "do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95,
           "transformers_version": transformers.__version__}
    with open(os.path.join(float_dir, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
        f.write("\n")
    write_tokenizer_files(tok, float_dir, a.seq_len)
    state = {k: v.detach().clone() for k, v in model_bf16.state_dict().items()}
    if "lm_head.weight" in state:
        del state["lm_head.weight"]  # tied: not in the checkpoint
    log("saved float model: %s" % sorted(os.listdir(float_dir)))
    with open(os.path.join(float_dir, "config.json")) as f:
        saved_cfg = json.load(f)
    stats["config"] = saved_cfg

    qdirs = {}
    deqs = {}
    for bits in sorted({a.bits, 4, 8}):
        name = "demo" if bits == a.bits else "demo-q%d" % bits
        try:
            deqs[bits] = write_mlx_quantized(float_dir, os.path.join(work, name), state, bits, a.group)
            qdirs[bits] = os.path.join(work, name)
            log("wrote %d-bit copy %s: %d bytes" % (bits, name, dir_bytes(qdirs[bits])))
        except Exception:  # noqa: BLE001
            traceback.print_exc()

    # 6. references (CPU, float32, eager)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_num_threads(max(1, min(16, os.cpu_count() or 1)))
        prompts = []
        for p in REF_PROMPTS:
            text = render_chat(p["messages"]) if p["chat"] else p["text"]
            ids = tok.encode(text, add_special_tokens=False).ids
            prompts.append(dict(name=p["name"], text=text, chat=p["chat"], ids=ids,
                                messages=p.get("messages")))
        # HF's own view of the tokenizer and template, as a check
        try:
            hft = transformers.AutoTokenizer.from_pretrained(float_dir)
            for p in prompts:
                if p["chat"]:
                    s = hft.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False)
                    assert s == p["text"], (s, p["text"])
                assert hft(p["text"], add_special_tokens=False)["input_ids"] == p["ids"], p["name"]
            stats["hf_tokenizer_check"] = "ok (%s, eos %s bos %s)" % (type(hft).__name__, hft.eos_token,
                                                                        hft.bos_token)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            stats["hf_tokenizer_check"] = "FAILED: %r" % (e,)
        log("hf tokenizer check:", stats["hf_tokenizer_check"])
        ref_config = transformers.Qwen3Config.from_pretrained(float_dir)
        variants = {"float": {k: v.float() for k, v in state.items()}}
        for bits, d in deqs.items():
            variants["q%d" % bits] = d
        refs = {}
        vlosses = {}
        for vname, weights in variants.items():
            m, cases = compute_refs(ref_config, weights, prompts, tok, N_REF)
            refs[vname] = cases
            mg = m.to(dev)
            vlosses[vname] = eval_loss_f32(mg, val_windows[:32], dev)
            del m, mg
            log("%s: val loss (f32, %d windows) %.4f" % (vname, min(32, len(val_windows)), vlosses[vname]))
            for c in cases:
                log("  %s -> %r (min margin %.3g)" % (c["name"], c["greedy_text"][:160], min(c["greedy_margin"])))
        stats["val_loss_f32"] = vlosses
        for vname, d in [("float", float_dir)] + [("q%d" % b, qd) for b, qd in qdirs.items()]:
            r = {"name": os.path.basename(d), "variant": vname,
                 "transformers_version": transformers.__version__, "torch_version": torch.__version__,
                 "tokenizers_version": tokenizers.__version__,
                 "notes": "greedy continuations (no EOS stop) computed with transformers on the CPU in float32, "
                          "eager attention, from exactly this directory's weights (quantized: dequantized "
                          "scale*q+bias); logprobs[i] = log_softmax of one forward over prompt+greedy at i, of ids[i+1]",
                 "val_loss": vlosses.get(vname),
                 "cases": [dict(name=p["name"], prompt_text=p["text"], chat=p["chat"], messages=p["messages"],
                                prompt_ids=p["ids"], **c_) for p, c_ in zip(prompts, [
                                    {k: v for k, v in c.items() if k != "name"} for c in refs[vname]])]}
            with open(os.path.join(d, "reference.json"), "w") as f:
                json.dump(r, f, indent=1)
                f.write("\n")
        # a few more samples from the shipped copy, for the README
        extra = ["def is_prime(n):\n", "def read_lines(path):\n", "class Stack:\n"]
        m = ref_model(ref_config, variants["q%d" % a.bits] if a.bits in deqs else variants["float"])
        samples = []
        for text in extra:
            ids, _, _ = greedy(m, tok.encode(text).ids, 64)
            samples.append({"prompt": text, "greedy": tok.decode(ids, skip_special_tokens=False)})
            log("sample %r -> %r" % (text, samples[-1]["greedy"]))
        stats["samples"] = samples
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        stats["refs_error"] = traceback.format_exc()

    stats["total_seconds"] = time.time() - T0
    with open(os.path.join(work, "train_stats.json"), "w") as f:
        json.dump(stats, f, indent=1, default=str)
    # 7. package
    package(work, a.out)
    log("done in %.1f s" % (time.time() - T0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
