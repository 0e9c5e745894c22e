#!/usr/bin/env bash
# Installs the pinned official OpenAI client (package-lock.json) into
# tests/e2e/node_modules (gitignored) for test_server's openai_node_client
# test. Needs node and npm; without them it says so and exits 0, and the test
# is skipped.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "tests/e2e: node/npm not found; the OpenAI client tests will be skipped" >&2
    exit 0
fi
if [ -f node_modules/openai/package.json ] &&
   [ "$(node -p "require('./node_modules/openai/package.json').version")" = \
     "$(node -p "require('./package-lock.json').packages['node_modules/openai'].version")" ]; then
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
