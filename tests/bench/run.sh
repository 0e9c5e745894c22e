#!/usr/bin/env bash
# run.sh — `make bench`: single-stream prefill and decode speed of vllm.c on
# random-weight checkpoints with the exact shapes of Qwen3-0.6B and
# Llama-3.2-1B (bf16, and the same weights MLX-quantized to 4 and 8 bits,
# group 64), the memory bandwidth they are bound by, and llama.cpp's
# llama-bench on the same weights (F16 GGUF; Q4_0 / Q8_0 made from it with
# llama-quantize for the quantized models) in the same run.
#
# Environment:
#   BUILD          build directory with bench/ binaries (set by make; default build)
#   BENCH_OUT      where checkpoints and results go (default bench-out, gitignored)
#   BENCH_MODELS   default "qwen3-0.6b llama-3.2-1b qwen3-0.6b-4bit qwen3-0.6b-8bit
#                  llama-3.2-1b-4bit llama-3.2-1b-8bit" (NAME-4bit/-8bit: MLX affine g64,
#                  compared with llama.cpp Q4_0 / Q8_0 of NAME)
#   BENCH_THREADS  default "1 2"
#   BENCH_REPS     timed repetitions per test (default 3; best and mean kept)
#   BENCH_PROMPT   prefill length (default 512); BENCH_GEN decode steps (default 64)
#   LLAMA_CPP_DIR  a llama.cpp build (default /work/llama.cpp-build); llama-bench
#                  is looked for in $LLAMA_CPP_DIR/build/bin and $LLAMA_CPP_DIR/bin
#   LLAMA_LIB_PATH if set, LD_LIBRARY_PATH for llama-bench (e.g. a libggml-cpu
#                  built without AMX: this build's AMX path dies with SIGILL on Q4_0/Q8_0)
#
# The checkpoints (1.2 GB and 2.5 GB) and GGUF files are written once and
# reused. Timings are the best repetition, for vllm.c and llama.cpp alike
# (llama-bench's per-repetition samples). Nothing here is a pass/fail test.
set -euo pipefail

BUILD=${BUILD:-build}
OUT=${BENCH_OUT:-bench-out}
MODELS=${BENCH_MODELS:-"qwen3-0.6b llama-3.2-1b qwen3-0.6b-4bit qwen3-0.6b-8bit llama-3.2-1b-4bit llama-3.2-1b-8bit"}
THREADS=${BENCH_THREADS:-"1 2"}
REPS=${BENCH_REPS:-3}
PROMPT=${BENCH_PROMPT:-512}
GEN=${BENCH_GEN:-64}
LLAMA_CPP_DIR=${LLAMA_CPP_DIR:-/work/llama.cpp-build}
B=$BUILD/bench

mkdir -p "$OUT"
T0=$(date +%s)

LLAMA_BENCH=""
for c in "$LLAMA_CPP_DIR/build/bin/llama-bench" "$LLAMA_CPP_DIR/bin/llama-bench"; do
    if [ -x "$c" ]; then LLAMA_BENCH=$c; break; fi
done
if [ -n "$LLAMA_BENCH" ] && ! command -v jq >/dev/null; then
    echo "bench: jq is needed to read llama-bench's JSON (apt-get install jq); llama.cpp skipped"
    LLAMA_BENCH=""
fi

echo "## vllm.c benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus, $(free -g | awk '/^Mem:/{print $2}') GiB"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# the llama.cpp file that goes with a model: NAME-f16, or NAME-q4_0 / -q8_0 for NAME-4bit / -8bit
gguf_of() {
    case "$1" in
    *-4bit) echo "$OUT/${1%-4bit}-q4_0.gguf" ;;
    *-8bit) echo "$OUT/${1%-8bit}-q8_0.gguf" ;;
    *) echo "$OUT/$1-f16.gguf" ;;
    esac
}
llama_bench() { if [ -n "${LLAMA_LIB_PATH:-}" ]; then LD_LIBRARY_PATH=$LLAMA_LIB_PATH "$LLAMA_BENCH" "$@"; else "$LLAMA_BENCH" "$@"; fi; }

# 1. checkpoints (and GGUF copies for llama.cpp)
for m in $MODELS; do
    if [ ! -f "$OUT/$m/config.json" ]; then "$B/mkmodel" "$m" "$OUT/$m"; fi
    [ -n "$LLAMA_BENCH" ] || continue
    base=${m%-4bit}; base=${base%-8bit}
    if [ ! -f "$OUT/$base-f16.gguf" ]; then
        [ -f "$OUT/$base/config.json" ] || "$B/mkmodel" "$base" "$OUT/$base"
        "$B/mkgguf" "$OUT/$base" "$OUT/$base-f16.gguf"
    fi
    g=$(gguf_of "$m")
    if [ ! -f "$g" ]; then
        quant=$(dirname "$LLAMA_BENCH")/llama-quantize
        t=$(case "$m" in *-4bit) echo Q4_0 ;; *) echo Q8_0 ;; esac)
        if [ -x "$quant" ]; then "$quant" "$OUT/$base-f16.gguf" "$g" "$t" >/dev/null 2>&1 || rm -f "$g"; fi
    fi
done

# 2. bandwidth, per thread count
declare -A BW
for t in $THREADS; do
    line=$("$B/bench_bw" --gib 2 --threads "$t" --reps 5)
    echo "$line"
    BW[$t]=$(sed -n 's/.*best_gbs=\([0-9.]*\).*/\1/p' <<<"$line")
done

# key=value field of a "result ..." line
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

declare -A PP TG PPM TGM WB LPP LTG
ISA=""
for m in $MODELS; do
    # 3. vllm.c
    for t in $THREADS; do
        line=$("$B/bench_model" "$OUT/$m" --threads "$t" --prompt "$PROMPT" --gen "$GEN" --reps "$REPS" \
            --name "$m" --bw "${BW[$t]}" | grep '^result')
        echo "$line"
        PP[$m,$t]=$(field "$line" pp_best); PPM[$m,$t]=$(field "$line" pp_mean)
        TG[$m,$t]=$(field "$line" tg_best); TGM[$m,$t]=$(field "$line" tg_mean)
        WB[$m]=$(field "$line" weight_bytes); ISA=$(field "$line" isa)
        # quantized: the bytes a decode step reads are the file's (codes, scales, biases, norms)
        case "$m" in *bit) WB[$m]=$(stat -c %s "$OUT/$m/model.safetensors") ;; esac
    done
    # 4. llama.cpp on the same weights, right after
    if [ -n "$LLAMA_BENCH" ] && [ -f "$(gguf_of "$m")" ]; then
        tl=$(tr ' ' ',' <<<"$THREADS")
        json=$(llama_bench -m "$(gguf_of "$m")" -p "$PROMPT" -n "$GEN" -t "$tl" -r "$REPS" -o json 2>/dev/null || echo '[]')
        for t in $THREADS; do
            LPP[$m,$t]=$(jq -r --argjson t "$t" --argjson p "$PROMPT" \
                '[.[] | select(.n_threads == $t and .n_prompt == $p and .n_gen == 0)][0].samples_ts | max' <<<"$json")
            LTG[$m,$t]=$(jq -r --argjson t "$t" --argjson g "$GEN" \
                '[.[] | select(.n_threads == $t and .n_gen == $g and .n_prompt == 0)][0].samples_ts | max' <<<"$json")
            echo "llama.cpp $m threads=$t pp$PROMPT=${LPP[$m,$t]} tg$GEN=${LTG[$m,$t]}"
        done
        LLAMA_BUILD=$(jq -r '.[0].build_commit + " (" + (.[0].cpu_info // "") + ")"' <<<"$json")
    fi
done

# 5. the table
num() { if [ -n "$1" ]; then awk -v x="$1" -v d="$2" 'BEGIN { printf "%.*f", d, x }'; else printf -- "-"; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'; }
frac() { awk -v w="$1" -v r="$2" -v bw="$3" 'BEGIN { if (bw > 0 && r > 0) printf "%.0f%%", 100 * w * r / (bw * 1e9); else printf "-" }'; }
{
    echo
    echo "measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cpus)"
    echo
    echo "| model | thr | vllm.c pp$PROMPT tok/s | llama.cpp pp$PROMPT | pp ratio | vllm.c tg$GEN tok/s | llama.cpp tg$GEN | tg ratio | weights GB/token | read BW GB/s | vllm.c decode % of BW | llama.cpp decode % of BW |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for m in $MODELS; do
        for t in $THREADS; do
            lpp=${LPP[$m,$t]:-}; ltg=${LTG[$m,$t]:-}
            printf "| %s | %s | %.1f | %s | %s | %.2f | %s | %s | %.3f | %.1f | %s | %s |\n" \
                "$m" "$t" "${PP[$m,$t]}" "$(num "$lpp" 1)" "$(ratio "${PP[$m,$t]}" "${lpp:-0}")" \
                "${TG[$m,$t]}" "$(num "$ltg" 2)" "$(ratio "${TG[$m,$t]}" "${ltg:-0}")" \
                "$(awk -v w="${WB[$m]}" 'BEGIN { printf "%.3f", w / 1e9 }')" "${BW[$t]}" \
                "$(frac "${WB[$m]}" "${TG[$m,$t]}" "${BW[$t]}")" "$(frac "${WB[$m]}" "${ltg:-0}" "${BW[$t]}")"
        done
    done
    echo
    echo "vllm.c kernels: $ISA; best of $REPS (means: $(for m in $MODELS; do for t in $THREADS; do printf "%s/%s pp %.1f tg %.2f; " "$m" "$t" "${PPM[$m,$t]}" "${TGM[$m,$t]}"; done; done))"
    if [ -n "$LLAMA_BENCH" ]; then
        echo "llama.cpp: $LLAMA_BENCH${LLAMA_LIB_PATH:+ (libs from $LLAMA_LIB_PATH)}, build ${LLAMA_BUILD:-?}, GGUF of the same weights (F16; Q4_0 / Q8_0 by llama-quantize for the -4bit / -8bit rows)"
    else
        echo "llama.cpp not found, skipped (set LLAMA_CPP_DIR to a build with bin/llama-bench)"
    fi
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); bench took $(( $(date +%s) - T0 )) s"
} | tee "$OUT/results.md"
