#!/usr/bin/env bash
# tools/demo/run.sh BIN MODEL HOST PORT — what `make run` does after the
# build: start `vllmc serve`, wait until it answers /health, print a curl
# line to paste, and stay in the foreground until Ctrl-C (which stops the
# server cleanly: it gets the SIGINT too).
set -uo pipefail
bin=$1 model=$2 host=$3 port=$4

"$bin" serve "$model" --host "$host" --port "$port" &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid; exit 0' INT TERM

up=0
for _ in $(seq 600); do
    kill -0 $pid 2>/dev/null || break
    if curl -sf "http://$host:$port/health" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
done
if [ $up = 1 ]; then
    name=$model
    cat <<MSG

  vllmc is serving $model on http://$host:$port (Ctrl-C stops it). Try:

  curl -s http://$host:$port/v1/completions -H 'Content-Type: application/json' \\
       -d '{"model": "$name", "prompt": "import os\\n\\ndef list_files(path):\\n", "max_tokens": 64, "temperature": 0}'

  or chat with it in another terminal: $bin chat $model

MSG
fi
wait $pid
