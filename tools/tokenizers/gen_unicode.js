// gen_unicode.js — writes src/text/tok_unicode.h: where the Unicode data of
// Hugging Face tokenizers differs from the libraries this project links, so
// the C tokenizer can follow tokenizers on every code point:
//   - regex classes: tokenizers' Oniguruma knows newer Unicode than PCRE2
//     10.42 (Unicode 14); the characters each \p{..} (and \d, \w) gains are
//     listed and added to the class when a pattern is translated;
//   - normalization: tokenizers' NFC/NFD/NFKC/NFKD use older Unicode data
//     than utf8proc; characters it does not know (no decomposition, class 0)
//     are listed and left untouched, as it leaves them;
//   - lowercase (Rust's char::to_lowercase, newer than utf8proc) and the
//     is_numeric / is_punctuation / regex \w predicates of the Digits,
//     Punctuation and Whitespace pre-tokenizers and single_word.
// Everything is measured, not looked up: tokenizers through its Node binding,
// PCRE2 and utf8proc through unicode_probe.c (compiled here with cc).
//   node tools/tokenizers/gen_unicode.js
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const tk = require('@anush008/tokenizers');

const OUT = path.join(__dirname, '../../src/text/tok_unicode.h');
const CATS = ['L', 'Lu', 'Ll', 'Lt', 'Lm', 'Lo', 'M', 'Mn', 'Mc', 'Me', 'N', 'Nd', 'Nl', 'No', 'P', 'Pc', 'Pd', 'Ps',
              'Pe', 'Pi', 'Pf', 'Po', 'S', 'Sm', 'Sc', 'Sk', 'So', 'Z', 'Zs', 'Zl', 'Zp'];
const WORD_BASE = '[\\p{L}\\p{M}\\p{Nd}\\p{Pc}]';

const ALL = [];
for (let c = 0; c < 0x110000; c++) if (c < 0xd800 || c > 0xdfff) ALL.push(c);

function toRanges(set) {
    const r = [];
    for (const c of [...set].sort((a, b) => a - b)) {
        if (r.length && r[r.length - 1][1] === c - 1) r[r.length - 1][1] = c;
        else r.push([c, c]);
    }
    return r;
}
function parseRanges(words) {
    const s = new Set();
    for (const w of words) {
        const [a, b] = w.split('-').map(x => parseInt(x, 16));
        for (let c = a; c <= b; c++) s.add(c);
    }
    return s;
}
const minus = (a, b) => new Set([...a].filter(x => !b.has(x)));

// --- the local libraries
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'uniprobe-'));
const exe = path.join(tmp, 'probe');
execFileSync('cc', ['-O2', '-o', exe, path.join(__dirname, 'unicode_probe.c'), '-lpcre2-8', '-lutf8proc']);
const pats = CATS.map(c => `${c}=\\p{${c}}`).concat(['d=\\d', `wbase=${WORD_BASE}`]);
const lines = execFileSync(exe, pats, { maxBuffer: 1 << 28 }).toString().trim().split('\n');
fs.rmSync(tmp, { recursive: true });
const local = {}, norm = [];
let lowerLocal = new Map();
for (const l of lines) {
    const [name, ...rest] = l.split(' ');
    if (name === 'norm') norm.push(rest);
    else if (name === 'u8p:lower') lowerLocal = new Map(rest.map(p => p.split(':').map(x => parseInt(x, 16))));
    else local[name] = parseRanges(rest);
}

// --- tokenizers
function tokWith(pre, normalizer = null) {
    return tk.Tokenizer.fromString(JSON.stringify({
        version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer, pre_tokenizer: pre,
        post_processor: null, decoder: null, model: { type: 'WordLevel', vocab: { x: 0 }, unk_token: 'x' } }));
}
function hfRegexSet(re) { // code points the Oniguruma regex matches (one character)
    const chars = ALL.filter(c => c > 0x20).map(c => String.fromCodePoint(c));
    const t = tokWith({ type: 'Split', pattern: { Regex: re }, behavior: 'Removed', invert: false });
    const non = new Set();
    for (const [s] of t.getPreTokenizer().preTokenizeString(chars.join(''))) for (const ch of s) non.add(ch.codePointAt(0));
    return new Set(ALL.filter(c => c > 0x20 && !non.has(c)));
}
function hfIsolated(pre) { // characters a pre-tokenizer isolates when each sits between two 'a'
    const s = 'a' + ALL.filter(c => c !== 0x61).map(c => String.fromCodePoint(c)).join('a') + 'a';
    const set = new Set();
    for (const [p] of tokWith(pre).getPreTokenizer().preTokenizeString(s)) {
        const cs = [...p];
        if (cs.length === 1 && p !== 'a') set.add(cs[0].codePointAt(0));
    }
    return set;
}

const out = [];
const emitRanges = (name, r) => {
    out.push(`static const struct tok_urange ${name}[] = {` + (r.length ? '' : ' { 1, 0 } ') + '');
    for (let i = 0; i < r.length; i += 6)
        out.push('    ' + r.slice(i, i + 6).map(([a, b]) => `{ 0x${a.toString(16)}, 0x${b.toString(16)} }`).join(', ') + ',');
    out.push('};');
};

const extras = [];
for (const c of CATS) {
    const hf = hfRegexSet(`\\p{${c}}`), pc = local[`pcre:${c}`];
    // a character that changed category between the versions: list the whole set
    if (minus(pc, hf).size) extras.push([c, toRanges(hf), 1]);
    else extras.push([c, toRanges(minus(hf, pc)), 0]);
}
{
    const hf = hfRegexSet('\\d'), pc = local['pcre:d'];
    if (minus(pc, hf).size) throw new Error('\\d: PCRE2 has characters Oniguruma does not');
    extras.push(['d', toRanges(minus(hf, pc)), 0]);
}
const wordHf = hfRegexSet('\\w'), wordPc = local['pcre:wbase'];
const wordAdd = toRanges(minus(wordHf, wordPc)), wordDel = toRanges(minus(wordPc, wordHf));

// normalization: characters whose NFD/NFKD/NFC/NFKC or combining class differ
const N = [tk.nfdNormalizer(), tk.nfkdNormalizer(), tk.nfcNormalizer(), tk.nfkcNormalizer()];
const hex = s => Buffer.from(s, 'utf8').toString('hex');
const opaque = new Set();
const inputs = [c => c, c => c, c => c, c => c, c => '\u0316' + c, c => c + '\u0316', c => '\u0301' + c, c => c + '\u0301'];
for (let f = 0; f < 8; f++) {
    const strs = norm.map(e => inputs[f](String.fromCodePoint(parseInt(e[0], 16))));
    const res = N[f < 4 ? f : 0].normalizeString(strs.join('\n')).split('\n');
    if (res.length !== strs.length) throw new Error('normalizer output split');
    norm.forEach((e, i) => { if (hex(res[i]) !== e[1 + f]) opaque.add(parseInt(e[0], 16)); });
}

// lowercase
const lowerHf = tk.lowercase().normalizeString(ALL.filter(c => c !== 10).map(c => String.fromCodePoint(c)).join('\n')).split('\n');
const lowerOv = [];
ALL.filter(c => c !== 10).forEach((c, i) => {
    const mine = String.fromCodePoint(lowerLocal.has(c) ? lowerLocal.get(c) : c);
    if (lowerHf[i] !== mine) lowerOv.push([c, [...lowerHf[i]].map(x => x.codePointAt(0))]);
});

// predicates
const numHf = hfIsolated({ type: 'Digits', individual_digits: true });
const punHf = hfIsolated({ type: 'Punctuation', behavior: 'Isolated' });
const nonWordHf = hfIsolated({ type: 'Whitespace' });
const ws = new Set([0x9, 0xa, 0xb, 0xc, 0xd, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005,
                    0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000]);
const rxWordHf = new Set(ALL.filter(c => !nonWordHf.has(c) && !ws.has(c)));
// StripAccents: the characters it removes (unicode-normalization's is_combining_mark)
const stripped = new Set();
{
    const cps = ALL.filter(c => c !== 10);
    const res = tk.stripAccentsNormalizer().normalizeString(cps.map(c => String.fromCodePoint(c)).join('\n')).split('\n');
    cps.forEach((c, i) => { if (res[i] === '') stripped.add(c); });
}
const pred = (name, hf, base) => [[`${name}_add`, toRanges(minus(hf, base))], [`${name}_del`, toRanges(minus(base, hf))]];
const preds = [...pred('numeric', numHf, local['u8p:numeric']), ...pred('punct', punHf, local['u8p:punct']),
               ...pred('rxword', rxWordHf, local['u8p:word']), ...pred('mark', stripped, local['u8p:mark'])];

out.push('/* tok_unicode.h — generated by tools/tokenizers/gen_unicode.js; do not edit.');
out.push(' *');
out.push(' * Where the Unicode data of Hugging Face tokenizers 0.22.2 (measured through');
out.push(' * @anush008/tokenizers 0.6.0) differs from PCRE2 10.42 and utf8proc 2.8 as');
out.push(' * linked here. Only tok_util.c includes it. Ranges are inclusive. */');
out.push('#ifndef VLLMC_TOK_UNICODE_H\n#define VLLMC_TOK_UNICODE_H\n');
out.push('struct tok_urange { uint32_t lo, hi; };\n');
out.push('/* Characters Oniguruma puts in \\p{NAME} (and \\d) that PCRE2 does not; exact: the');
out.push(' * whole set (PCRE2 also has characters Oniguruma does not) */');
for (const [c, r] of extras) emitRanges(`tok_onig_extra_${c}`, r);
out.push('static const struct { const char *name; const struct tok_urange *r; int n; int exact; } tok_onig_extra[] = {');
for (const [c, r, x] of extras) out.push(`    { "${c}", tok_onig_extra_${c}, ${r.length}, ${x} },`);
out.push('};\n');
out.push(`/* Oniguruma's \\w against PCRE2's ${WORD_BASE} */`);
emitRanges('tok_onig_word_add', wordAdd);
emitRanges('tok_onig_word_del', wordDel);
out.push('\n/* Characters tokenizers\' normalizers do not know (left as they are) */');
emitRanges('tok_norm_opaque', toRanges(opaque));
out.push('\n/* Rust\'s char::to_lowercase where utf8proc_tolower differs: cp, then up to 3 code points */');
out.push('static const uint32_t tok_lower_override[][4] = {');
for (const [c, l] of lowerOv) out.push(`    { 0x${c.toString(16)}, ${l.map(x => '0x' + x.toString(16)).join(', ')} },`);
out.push('};\n');
out.push('/* is_numeric (Digits), is_punctuation (Punctuation), regex \\w (Whitespace,');
out.push(' * single_word), is_combining_mark (StripAccents) against the utf8proc');
out.push(' * categories tok_util.c starts from */');
for (const [n, r] of preds) emitRanges(`tok_${n}`, r);
out.push('\n#endif');
fs.writeFileSync(OUT, out.join('\n') + '\n');
console.log(`${OUT}: regex extras ${extras.map(([c, r, x]) => c + ':' + r.length + (x ? '(exact)' : '')).join(' ')}; \\w +${wordAdd.length}/-${wordDel.length};` +
            ` opaque ${opaque.size}; lower ${lowerOv.length}; ${preds.map(([n, r]) => n + ':' + r.length).join(' ')}`);
