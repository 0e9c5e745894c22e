// bench_hf.js — the Hugging Face side of tests/bench/bench_tokenizer.c: load
// time and single-threaded encode time of tokenizers (Rust, Node binding) on
// the same text file, best of `reps`. Prints one JSON line; writes the ids
// (int32 little-endian) to ids_out so the C side can compare them.
//   RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
//     node tools/tokenizers/bench_hf.js TOKENIZER_DIR TEXT_FILE IDS_OUT [reps]
'use strict';
const fs = require('fs');
const path = require('path');
const tk = require('@anush008/tokenizers');

(async () => {
    const [dir, textFile, idsOut, repsArg] = process.argv.slice(2);
    const reps = Number(repsArg || 3);
    const text = fs.readFileSync(textFile, 'utf8');
    let load = Infinity, enc = Infinity, tok = null, ids = null;
    for (let r = 0; r < reps; r++) {
        const t0 = process.hrtime.bigint();
        tok = tk.Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
        load = Math.min(load, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    for (let r = 0; r < reps; r++) {
        const t0 = process.hrtime.bigint();
        const e = await tok.encode(text, null, { addSpecialTokens: false });
        ids = e.getIds();
        enc = Math.min(enc, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    fs.writeFileSync(idsOut, Buffer.from(Int32Array.from(ids).buffer));
    console.log(JSON.stringify({ load_s: load, encode_s: enc, n_ids: ids.length }));
})();
