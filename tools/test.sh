#!/usr/bin/env bash
# The README's test command: set up what is missing (tools/setup.sh), build,
# run every test. `make test` does the same.
set -euo pipefail
cd "$(dirname "$0")/.."
make -j"$(nproc)" test
