#!/bin/bash
# ptx_fallback.sh — the generic fallback build (DESIGN.md 7, Makefile
# CUDA_GENCODE): the CUDA kernels as compute_80 PTX only, so the driver
# JIT-compiles them, as it does on a GPU the build has no machine code for
# (Ampere, Ada, Blackwell), and run on whatever GPU is there. CI has no GPU,
# so this is run by hand:
#   tools/gpu/ptx_fallback.sh build DIR    here (nvcc, no GPU needed): DIR/tests/...
#   tools/gpu/ptx_fallback.sh run DIR      on the GPU machine, from the repository
#                                          root (the fixtures), DIR as built
# The run checks that the backend says it runs PTX ("kernels from compute_80
# PTX": no programmatic dependent launch then), and runs test_cuda and the
# golden, quantized-golden and engine tests on the device. Exit status 0 when
# all pass.
set -u
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 build|run DIR" >&2; exit 2; }
case $cmd in
build)
    exec make CUDA=1 BUILD="$dir" CUDA_GENCODE="-gencode arch=compute_80,code=compute_80" -j"$(nproc)" unit ;;
run)
    export CUDA_CACHE_MAXSIZE=4294967296 # the JIT's cache: every kernel is compiled once
    rc=0 ptx=0
    for t in test_cuda test_engine test_golden test_quant_golden; do
        out=$(VLLMC_TEST_DEVICE=cuda "$dir/tests/$t" 2>&1)
        echo "$t: $(echo "$out" | tail -1)"
        # at least one test passed and none failed (a backend that cannot start skips them all)
        echo "$out" | tail -1 | grep -qE "## [1-9][0-9]* passed, 0 failed" ||
            { echo "$out" | grep -E "CHECK|FAIL|fail|skipped:" | head; rc=1; }
        # the golden tests print the backend's description, which names the PTX
        echo "$out" | grep -q "kernels from compute_80 PTX" && ptx=1
    done
    [ $ptx = 1 ] || { echo "the backend did not report compute_80 PTX: not a fallback build?"; rc=1; }
    exit $rc ;;
*) echo "usage: $0 build|run DIR" >&2; exit 2 ;;
esac
