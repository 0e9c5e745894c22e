#!/usr/bin/env python3
"""Write a random-weight checkpoint with Llama-3.1-8B's exact shapes, as
save_pretrained lays it out (config.json, generation_config.json, safetensors
shards of at most 5 GB + model.safetensors.index.json), for the GPU
benchmarks of vllm.c (tools/gpu/e2e.sh). Weights are made on the GPU (normal,
std 0.02; norms 1) in bf16, so writing 16 GB takes seconds, not minutes.

    python3 tools/gpu/random_llama8b.py OUTDIR [--layers N] [--mlx-bits B]

--mlx-bits 4|8 stores every matrix (embedding and head included, as
mlx-community's Llama checkpoints do) MLX-affine quantized, groups of 64:
weight U32 [rows, cols * B / 32] (little-endian codes), scales and biases
bf16 with w = scale * q + bias, bias = the group's minimum, scale = its
range / (2^B - 1), and config.json's "quantization". That is MLX's layout,
not its exact rounding: the checkpoint is for timing, as the bf16 one.

Nothing in it is a reference output: the run compares speeds, not tokens."""
import json
import os
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1]
layers = int(sys.argv[sys.argv.index("--layers") + 1]) if "--layers" in sys.argv else 32
bits = int(sys.argv[sys.argv.index("--mlx-bits") + 1]) if "--mlx-bits" in sys.argv else 0
assert bits in (0, 4, 8), "--mlx-bits: 4 or 8"
GS = 64
d, ff, H, Hkv, D, V = 4096, 14336, 32, 8, 128, 128256
cfg = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d,
    "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": H,
    "num_key_value_heads": Hkv, "head_dim": D, "vocab_size": V, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    "attention_bias": False, "mlp_bias": False,
}
if bits:
    cfg["quantization"] = {"group_size": GS, "bits": bits}
os.makedirs(out, exist_ok=True)
json.dump(cfg, open(f"{out}/config.json", "w"), indent=1)
json.dump({"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": True,
           "temperature": 0.6, "top_p": 0.9}, open(f"{out}/generation_config.json", "w"), indent=1)

g = torch.Generator(device="cuda").manual_seed(0)


def rnd(*shape):
    return (torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()


def mlx_quant(name, shape):
    """name.weight/.scales/.biases of a random matrix, quantized on the GPU"""
    w = (torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32) * 0.02).view(shape[0], -1, GS)
    lo, hi = w.amin(dim=2, keepdim=True), w.amax(dim=2, keepdim=True)
    sc = ((hi - lo) / ((1 << bits) - 1)).to(torch.bfloat16).float().clamp_min(1e-8)
    bi = lo.to(torch.bfloat16).float()
    q = ((w - bi) / sc).round().clamp(0, (1 << bits) - 1).to(torch.int64).view(shape[0], -1, 32 // bits)
    word = (q << (torch.arange(32 // bits, device="cuda") * bits)).sum(dim=2)  # < 2^32
    word = torch.where(word >= 1 << 31, word - (1 << 32), word).to(torch.int32).view(torch.uint32)
    base = name[: -len(".weight")]
    return {name: word.cpu(), base + ".scales": sc.squeeze(2).to(torch.bfloat16).cpu(),
            base + ".biases": bi.squeeze(2).to(torch.bfloat16).cpu()}


tensors = [("model.embed_tokens.weight", (V, d)), ("lm_head.weight", (V, d)), ("model.norm.weight", None)]
for i in range(layers):
    p = f"model.layers.{i}."
    tensors += [(p + "input_layernorm.weight", None), (p + "post_attention_layernorm.weight", None),
                (p + "self_attn.q_proj.weight", (H * D, d)), (p + "self_attn.k_proj.weight", (Hkv * D, d)),
                (p + "self_attn.v_proj.weight", (Hkv * D, d)), (p + "self_attn.o_proj.weight", (d, H * D)),
                (p + "mlp.gate_proj.weight", (ff, d)), (p + "mlp.up_proj.weight", (ff, d)),
                (p + "mlp.down_proj.weight", (d, ff))]
shards, cur, cur_bytes, total = [], {}, 0, 0
for name, shape in tensors:
    if shape is None:
        part = {name: torch.ones(d, dtype=torch.bfloat16)}
    else:
        part = mlx_quant(name, shape) if bits else {name: rnd(*shape)}
    nb = sum(t.numel() * t.element_size() for t in part.values())
    if cur and cur_bytes + nb > 5 << 30:
        shards.append(cur)
        cur, cur_bytes = {}, 0
    cur.update(part)
    cur_bytes += nb
    total += nb
shards.append(cur)
wmap = {}
for i, sh in enumerate(shards):
    fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(sh, f"{out}/{fn}", metadata={"format": "pt"})
    for k in sh:
        wmap[k] = fn
json.dump({"metadata": {"total_size": total}, "weight_map": wmap},
          open(f"{out}/model.safetensors.index.json", "w"), indent=1)
print(f"{out}: {layers} layers, {total / 1e9:.2f} GB in {len(shards)} shards")
