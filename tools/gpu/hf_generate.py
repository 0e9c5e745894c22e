#!/usr/bin/env python3
"""The PyTorch/transformers floor for `vllmc bench throughput`: generate on
the same checkpoint with the same shape of work (B requests of I random
prompt tokens, O sampled tokens each, temperature 1, EOS ignored) in one
`generate` call of batch B, bf16, SDPA attention, on the GPU.

    python3 tools/gpu/hf_generate.py MODEL B I O

Prints one JSON line: output tokens/s and the wall time of the call."""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM

model_dir, B, I, O = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
g = torch.Generator().manual_seed(0)
ids = torch.randint(1000, 120000, (B, I), generator=g).cuda()
mask = torch.ones_like(ids)
with torch.no_grad():
    m.generate(ids[:2, :16], attention_mask=mask[:2, :16], max_new_tokens=4, do_sample=True)  # warm-up
    torch.cuda.synchronize()
    t = time.time()
    out = m.generate(ids, attention_mask=mask, max_new_tokens=O, min_new_tokens=O, do_sample=True,
                     temperature=1.0, top_p=1.0, top_k=0)
    torch.cuda.synchronize()
    dt = time.time() - t
n_out = (out.shape[1] - I) * B
print(json.dumps({"impl": "transformers generate", "batch": B, "input_len": I, "output_len": O,
                  "seconds": round(dt, 2), "output_tok_s": round(n_out / dt, 1),
                  "total_tok_s": round((n_out + B * I) / dt, 1)}))
