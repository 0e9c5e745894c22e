#!/usr/bin/env bash
# The README's test command: install what is missing, build, run every test.
# As root, missing Debian packages are installed with apt-get; otherwise the
# script says exactly what to install and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -f /usr/include/jansson.h ] || need+=(libjansson-dev)
[ -f /usr/include/pcre2.h ] || need+=(libpcre2-dev)
[ -f /usr/include/utf8proc.h ] || need+=(libutf8proc-dev)
[ -f /usr/include/openssl/sha.h ] || need+=(libssl-dev)
[ -f /usr/include/xxhash.h ] || need+=(libxxhash-dev)
[ -f /usr/include/microhttpd.h ] || need+=(libmicrohttpd-dev)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    else
        echo "missing packages: ${need[*]}" >&2
        echo "install them with: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
fi

bash tests/e2e/install.sh || echo "tests/e2e: npm ci failed; the OpenAI client tests will be skipped" >&2
bash tools/tokenizers/fetch.sh || echo "tools/tokenizers/fetch.sh failed: the real-tokenizer tests will be skipped" >&2
make -j"$(nproc)" test
