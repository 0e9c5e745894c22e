#!/bin/bash
# e2e.sh — vllm.c on the GPU machine as a user runs it, on a random-weight
# checkpoint with Llama-3.1-8B's shapes (random_llama8b.py) and the Llama 3.1
# tokenizer: `vllmc serve --device cuda` answered with curl (models,
# completions, chat with streaming, a client killed mid-stream, malformed
# requests, metrics, SIGINT), then `vllmc bench throughput` (256 requests,
# input 512, output 256) and transformers' `generate` at the same batch as the
# floor (hf_generate.py). E2E_MODES: the VLLMC_CUDA_MATMUL modes of the throughput
# runs (default "split bf16").
#
#   bash tools/gpu/e2e.sh BINDIR TOKDIR   (BINDIR: bin/vllmc + lib/ built on the dev machine)
# E2E_MODEL (default /tmp/m8b, made when missing), E2E_DEVICE (cuda), E2E_SERVE_ONLY=1
# (only the serve part). Logs go to $OUT (the device tool's result folder) or ./e2e-out.
set -u
BIN=$(cd "$1" && pwd); TOK=$2; O=${OUT:-e2e-out}; mkdir -p "$O"
export LD_LIBRARY_PATH=$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ldd "$BIN/bin/vllmc" | grep -q "not found"; then
    d=$(dirname "$(find / -xdev -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
fi
CT=$(mktemp -d); V="$BIN/bin/vllmc"; M=${E2E_MODEL:-/tmp/m8b}; DEV=${E2E_DEVICE:-cuda}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$O/env.txt"
[ -f $M/config.json ] || PYTHONUNBUFFERED=1 python3 tools/gpu/random_llama8b.py $M 2>&1 | tail -2
cp "$TOK"/tokenizer.json "$TOK"/tokenizer_config.json $M/

echo "== serve"
"$V" serve $M --device $DEV --port 8011 > "$O/serve.log" 2>&1 &
SP=$!
for i in $(seq 120); do curl -sf localhost:8011/health >/dev/null && break; sleep 1; done
U=localhost:8011
{
echo "-- /v1/models"; curl -s $U/v1/models; echo
echo "-- completion"; curl -s $U/v1/completions -H 'Content-Type: application/json' \
  -d '{"model":"'$M'","prompt":"The capital of France is","max_tokens":8,"temperature":0,"logprobs":2}'; echo
echo "-- chat, streamed"; curl -sN $U/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"model":"'$M'","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}'; echo
echo "-- client killed mid-stream"; timeout 1 curl -sN $U/v1/completions -H 'Content-Type: application/json' \
  -d '{"model":"'$M'","prompt":"x","max_tokens":4000,"ignore_eos":true,"stream":true}' | head -c 300; echo
echo "-- garbage"; curl -s -w ' %{http_code}' $U/v1/completions -H 'Content-Type: application/json' -d '{"prompt": [1,2,'; echo
curl -s -w ' %{http_code}' $U/v1/completions -H 'Content-Type: application/json' -d '{"model":"'$M'","prompt":"x","max_tokens":-3}'; echo
echo "-- 8 concurrent"; for i in 1 2 3 4 5 6 7 8; do curl -s $U/v1/completions -H 'Content-Type: application/json' \
  -d '{"model":"'$M'","prompt":"Count: 1 2 3","max_tokens":64,"ignore_eos":true}' -o "$CT/c$i.json" & done; wait
python3 -c "import json,sys; r=[json.load(open('$CT/c%d.json'%i)) for i in range(1,9)]; print('usage', [x['usage']['completion_tokens'] for x in r])"
echo "-- health after"; curl -s -w ' %{http_code}\n' $U/health
echo "-- metrics"; curl -s $U/metrics | grep -E '^vllm:(num_requests_running|generation_tokens_total|prompt_tokens_total|kv_cache_usage_perc)' 
} 2>&1 | tee "$O/serve_curl.txt"
kill -INT $SP; for i in $(seq 20); do kill -0 $SP 2>/dev/null || break; sleep 0.5; done
wait $SP; echo "serve exit: $?" | tee -a "$O/serve_curl.txt"

[ -n "${E2E_SERVE_ONLY:-}" ] && exit 0
for mode in ${E2E_MODES:-split bf16}; do
    echo "== bench throughput (VLLMC_CUDA_MATMUL=$mode)"
    VLLMC_CUDA_MATMUL=$mode timeout 300 "$V" bench throughput $M --device $DEV --num-prompts 256 --input-len 512 \
        --output-len 256 --max-num-batched-tokens 8192 --output-json "$O/throughput_$mode.json" 2>&1 | tail -6
done
echo "== transformers generate floor"
PYTHONUNBUFFERED=1 timeout 300 python3 tools/gpu/hf_generate.py $M 256 512 256 2>&1 | tail -3 | tee "$O/hf.txt"
