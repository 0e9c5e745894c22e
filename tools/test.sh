#!/usr/bin/env bash
# The README's test command: install what is missing, build, run every test.
# As root, missing Debian packages are installed with apt-get; otherwise the
# script says exactly what to install and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/deps.sh

bash tests/e2e/install.sh || echo "tests/e2e: npm ci failed; the OpenAI client tests will be skipped" >&2
bash tools/tokenizers/fetch.sh || echo "tools/tokenizers/fetch.sh failed: the real-tokenizer tests will be skipped" >&2
make -j"$(nproc)" test
