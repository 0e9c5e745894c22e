#!/usr/bin/env bash
# tools/deps.sh — install the Debian/Ubuntu packages vllm.c needs to build
# and test (used by `make run`, `make test` via tools/test.sh, and CI).
# As root, missing packages are installed with apt-get; otherwise the script
# prints exactly what to install and exits 1. With --check it only reports.
set -euo pipefail

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -f /usr/include/jansson.h ] || need+=(libjansson-dev)
[ -f /usr/include/pcre2.h ] || need+=(libpcre2-dev)
[ -f /usr/include/utf8proc.h ] || need+=(libutf8proc-dev)
[ -f /usr/include/openssl/sha.h ] || need+=(libssl-dev)
[ -f /usr/include/xxhash.h ] || need+=(libxxhash-dev)
[ -f /usr/include/microhttpd.h ] || need+=(libmicrohttpd-dev)

[ ${#need[@]} -eq 0 ] && exit 0
if [ "${1:-}" != "--check" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    exit 0
fi
echo "missing packages: ${need[*]}" >&2
echo "install them with: sudo apt-get install -y ${need[*]}" >&2
exit 1
