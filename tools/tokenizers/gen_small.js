// gen_small.js — hand-written tokenizer.json files for the pipeline pieces the
// real tokenizers do not exercise (Metaspace prepend schemes, the other
// normalizers and pre-tokenizers, every split behavior, lstrip / rstrip /
// single_word / normalized added tokens, continuing_subword_prefix,
// Roberta-style post-processing, the Oniguruma regex traps), with reference
// ids and strings from Hugging Face tokenizers (Node binding). The
// vocabularies and merges are learned here by a tiny BPE trainer on a fixed
// text, so piece boundaries change ids. Writes
// tests/fixtures/tokenizers/small/NAME/{tokenizer.json,tokenizer_config.json,golden.json}.
//   node tools/tokenizers/gen_small.js
'use strict';
const fs = require('fs');
const path = require('path');
const tk = require('@anush008/tokenizers');
const { transformersPostProcessor, soupTexts } = require('./hf_rules');
const SOUP = soupTexts(300, 777);

const OUT = path.join(__dirname, '../../tests/fixtures/tokenizers/small');

const TRAIN = [
    'Hello world! Hello there, hello again. The quick brown fox jumps over the lazy dog.',
    "It's what they're doing: don't stop, we'll see. I've 12 apples and 345 pears, 2024-01-15.",
    'naïve café résumé über straße ÉCOLE école 東京 日本語 한국어 abc-def ghi_jkl mno.pqr',
    'zzz zzzz buzz fizz 1234567890 a1b2c3 x-ray re-enter co-op well-known, comma,separated',
    '    indented code();\n\tfoo(bar, baz) => { return x + y; }\n\nint main(void) { return 0; }',
    'aaaaaaa bbbbbb ababab abcabc the then there these those this thin thing think',
];

// BPE training over symbol sequences (one per word); returns merges.
function train(words, nMerges) {
    const merges = [];
    let seqs = words.map(w => w.slice());
    for (let m = 0; m < nMerges; m++) {
        const counts = new Map();
        for (const s of seqs)
            for (let i = 0; i + 1 < s.length; i++) {
                const k = s[i] + '\u0000' + s[i + 1];
                counts.set(k, (counts.get(k) || 0) + 1);
            }
        let best = null, bc = 1;
        for (const [k, c] of counts) if (c > bc || (c === bc && best !== null && k < best)) { best = k; bc = c; }
        if (!best) break;
        const [a, b] = best.split('\u0000');
        merges.push([a, b]);
        seqs = seqs.map(s => {
            const o = [];
            for (let i = 0; i < s.length; i++) {
                if (i + 1 < s.length && s[i] === a && s[i + 1] === b) { o.push(a + b); i++; } else o.push(s[i]);
            }
            return o;
        });
    }
    return merges;
}

function charsOf(s) { return Array.from(s); }

const BASE_CHARS = (() => {
    const set = new Set();
    for (let c = 0x20; c < 0x7f; c++) set.add(String.fromCharCode(c));
    for (const line of TRAIN) for (const ch of line) set.add(ch);
    for (const ch of 'éèêëàâäîïôöûüçñß\n\t▁') set.add(ch);
    return [...set];
})();

// A char-level vocabulary (+ <unk>, byte fallback tokens) and merges learned
// on words split by `split` after `prep`.
function charModel({ prep = s => s, split = s => s.split(/(?= )/), nMerges = 120, byteFallback = false,
                     extra = [] } = {}) {
    const vocab = {};
    let id = 0;
    const add = t => { if (!(t in vocab)) vocab[t] = id++; };
    add('<unk>'); add('<s>'); add('</s>');
    if (byteFallback) for (let b = 0; b < 256; b++) add('<0x' + b.toString(16).toUpperCase().padStart(2, '0') + '>');
    for (const c of BASE_CHARS) add(c);
    for (const e of extra) add(e);
    const words = [];
    for (const line of TRAIN) for (const w of split(prep(line))) if (w) words.push(charsOf(w));
    const merges = train(words, nMerges);
    for (const [a, b] of merges) add(a + b);
    return { vocab, merges };
}

// GPT-2 byte alphabet
const BYTE_CHARS = (() => {
    const bs = [];
    for (let b = 33; b <= 126; b++) bs.push(b);
    for (let b = 161; b <= 172; b++) bs.push(b);
    for (let b = 174; b <= 255; b++) bs.push(b);
    const cs = bs.slice();
    let n = 0;
    for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
    const m = new Array(256);
    bs.forEach((b, i) => { m[b] = String.fromCodePoint(cs[i]); });
    return m;
})();
function byteMap(s) { return Array.from(Buffer.from(s, 'utf8')).map(b => BYTE_CHARS[b]); }

function byteModel(nMerges = 200, extra = []) {
    const vocab = {};
    let id = 0;
    for (const e of extra) vocab[e] = id++;
    for (let b = 0; b < 256; b++) vocab[BYTE_CHARS[b]] = id++;
    const words = [];
    for (const line of TRAIN) for (const w of line.split(/(?= )/)) words.push(byteMap(w));
    const merges = train(words, nMerges);
    for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = id++;
    return { vocab, merges };
}

function bpe(m, opts = {}) {
    return Object.assign({ type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
                           end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
                           vocab: m.vocab, merges: m.merges }, opts);
}

function added(id, content, o = {}) {
    return Object.assign({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false,
                           special: true }, o);
}

const COMMON = [
    '', ' ', '  ', 'a', 'Hello world!', ' Hello  world ', 'hello\nworld\n', '\tTabbed\tline',
    "It's they're we'll I've DON'T 'S", 'naïve café, ÉCOLE résumé', 'straße ﬁne ＨＥＬＬＯ ① ²',
    '12345 1.5 2024-01-15 x-ray', 'zzzzzz buzz', '東京 日本語 한국어', '😀 emoji 👨‍👩‍👧', 'a\u180eb c\u3000d e\u00a0f',
    'e\u0301 n\u0303 A\u030a \u212b İstanbul ΣΑΣ', 'foo(bar, baz) => { return x; }', 'comma,separated,,values',
    '▁pre▁spaced', '<s>Hello</s> <s>', 'x<s>y', 'unknown ꙮ 𓀀 chars',
];

function texts(extra) { return COMMON.concat(extra || []); }

async function emit(name, json, cfg, cases) {
    const dir = path.join(OUT, name);
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, JSON.stringify(json, null, 1) + '\n');
    if (cfg) fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(cfg, null, 1) + '\n');
    const tok = tk.Tokenizer.fromFile(file);
    if (cfg) transformersPostProcessor(tok, cfg, json);
    const g = { tokenizer: name, reference: '@anush008/tokenizers@0.6.0 (tokenizers 0.22.2)', cases: [] };
    for (const text of cases) {
        const a = await tok.encode(text, null, { addSpecialTokens: false });
        const b = await tok.encode(text, null, { addSpecialTokens: true });
        g.cases.push({ text, ids: a.getIds(), ids_special: b.getIds(),
                       decode: await tok.decode(b.getIds(), false), decode_skip: await tok.decode(b.getIds(), true) });
    }
    fs.writeFileSync(path.join(dir, 'golden.json'), JSON.stringify(g, null, 0).replace(/\},\{/g, '},\n{') + '\n');
    console.log(`${dir}: ${cases.length} cases`);
}

const SP_ADDED = [added(0, '<unk>'), added(1, '<s>'), added(2, '</s>')];
const SP_DECODER = { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' },
                                                  { type: 'ByteFallback' }, { type: 'Fuse' },
                                                  { type: 'Strip', content: ' ', start: 1, stop: 0 }] };
const TEMPLATE = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
             { SpecialToken: { id: '</s>', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] }, '</s>': { id: '</s>', ids: [2], tokens: ['</s>'] } },
};

function doc(o) {
    return Object.assign({ version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
                           pre_tokenizer: null, post_processor: null, decoder: null }, o);
}

(async () => {
    const spModel = charModel({ prep: s => '▁' + s.replace(/ /g, '▁'), split: s => s.split(/(?=▁)/), byteFallback: true });

    for (const scheme of ['first', 'always', 'never']) {
        await emit(`metaspace_${scheme}`, doc({
            added_tokens: SP_ADDED.concat([added(400, '<x>', { special: false })]),
            pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: scheme, split: scheme !== 'always' },
            post_processor: TEMPLATE,
            decoder: scheme === 'first'
                ? { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: true }
                : scheme === 'never' ? { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: true }
                : SP_DECODER,
            model: bpe(spModel, { unk_token: '<unk>', byte_fallback: true, fuse_unk: true }),
        }), null, texts(['<x>hello <x> x<x>', 'Hello<s>', ' <s> leading']));
    }

    await emit('normalizers', doc({
        added_tokens: SP_ADDED,
        normalizer: { type: 'Sequence', normalizers: [
            { type: 'NFKC' }, { type: 'Lowercase' },
            { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' },
            { type: 'Strip', strip_left: true, strip_right: true },
            { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
            { type: 'Prepend', prepend: '▁' }] },
        pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true },
                                                           { type: 'Punctuation', behavior: 'Isolated' }] },
        post_processor: TEMPLATE,
        decoder: SP_DECODER,
        model: bpe(spModel, { unk_token: '<unk>', fuse_unk: true }),
    }), { add_bos_token: true, add_eos_token: true, bos_token: '<s>', eos_token: '</s>' },
    texts(['  MULTIPLE    Spaces  HERE ', 'ＡＢＣ ﬃ ㎏ Ⅻ', 'İI ı', '12 345 6789']).concat(SOUP));

    const wsModel = charModel({ split: s => s.split(/\s+|(?=[^\w\s])|(?<=[^\w\s])/u), nMerges: 150 });
    await emit('nfkd_strip', doc({
        normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKD' }, { type: 'StripAccents' }, { type: 'Lowercase' }] },
        pre_tokenizer: { type: 'Whitespace' },
        decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
        model: bpe(wsModel, { unk_token: '<unk>' }),
    }), null, texts(["what 's up , do not worry .", 'Crème Brûlée à la française', 'a_b c__d e-f']).concat(SOUP));

    await emit('nfd_whitespace_split', doc({
        normalizer: { type: 'NFD' },
        pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' }, { type: 'CharDelimiterSplit', delimiter: '-' }] },
        decoder: null,
        model: bpe(wsModel, { unk_token: '<unk>', fuse_unk: false }),
    }), null, texts(['co-op well-known--x']).concat(SOUP));

    const plainModel = charModel({ split: s => s.split(/(?= )/), nMerges: 200 });
    await emit('splits', doc({
        pre_tokenizer: { type: 'Sequence', pretokenizers: [
            { type: 'Split', pattern: { Regex: '\\d+' }, behavior: 'MergedWithPrevious', invert: false },
            { type: 'Split', pattern: { String: '-' }, behavior: 'MergedWithNext', invert: false },
            { type: 'Split', pattern: { String: ',' }, behavior: 'Removed', invert: false },
            { type: 'Split', pattern: { Regex: 'z+' }, behavior: 'Contiguous', invert: false },
            { type: 'Split', pattern: { Regex: '[aeiou]' }, behavior: 'Isolated', invert: true },
            { type: 'BertPreTokenizer' }] },
        decoder: { type: 'Fuse' },
        model: bpe(plainModel, { unk_token: '<unk>' }),
    }), null, texts(['abc123def456 x-y--z zzaz', 'the there these 12ab34']).concat(SOUP));

    const blModel = byteModel(250, ['<s>', '</s>', '<pad>', '<mask>']);
    await emit('added_tokens', doc({
        added_tokens: [
            added(0, '<s>'), added(1, '</s>'), added(2, '<pad>'),
            added(3, '<mask>', { lstrip: true, rstrip: true }),
            added(600, '[WORD]', { special: false, single_word: true }),
            added(601, 'Hello', { special: false, normalized: true }),
            added(602, '<se', { special: false }),
            added(603, '<sep>', { special: true }),
            added(604, 'ab', { special: false, lstrip: true }),
            added(605, 'END', { special: false, rstrip: true, normalized: true }),
        ],
        normalizer: { type: 'Lowercase' },
        pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        model: bpe(blModel),
    }), { add_eos_token: true, eos_token: '</s>', bos_token: '<s>', add_bos_token: false },
    texts(['a <mask> b', 'a<mask>b', '  <mask>  ', '[WORD] x[WORD] [WORD]x ([WORD])', 'hello HELLO Hello',
           '<sep><se<sepx <s', 'ab cab  ab', 'the end END  END', 'x  <mask><mask>  y']));

    const spfx = (() => {
        const vocab = {};
        let id = 0;
        const add = t => { if (!(t in vocab)) vocab[t] = id++; };
        add('<unk>');
        for (const c of BASE_CHARS) { add(c); add('##' + c); add(c + '</w>'); add('##' + c + '</w>'); }
        const words = [];
        for (const line of TRAIN)
            for (const w of line.split(/\s+|(?=[^\w\s])|(?<=[^\w\s])/u)) {
                if (!w) continue;
                const cs = Array.from(w).map((c, i, a) => (i ? '##' : '') + c + (i === a.length - 1 ? '</w>' : ''));
                words.push(cs);
            }
        // train with prefix-aware concatenation: a + b without b's "##"
        const merges = [];
        let seqs = words;
        for (let m = 0; m < 150; m++) {
            const counts = new Map();
            for (const s of seqs) for (let i = 0; i + 1 < s.length; i++) {
                const k = s[i] + '\u0000' + s[i + 1];
                counts.set(k, (counts.get(k) || 0) + 1);
            }
            let best = null, bc = 1;
            for (const [k, c] of counts) if (c > bc || (c === bc && best !== null && k < best)) { best = k; bc = c; }
            if (!best) break;
            const [a, b] = best.split('\u0000');
            const nt = a + b.replace(/^##/, '');
            merges.push([a, b]);
            add(nt);
            seqs = seqs.map(s => {
                const o = [];
                for (let i = 0; i < s.length; i++) {
                    if (i + 1 < s.length && s[i] === a && s[i + 1] === b) { o.push(nt); i++; } else o.push(s[i]);
                }
                return o;
            });
        }
        return { vocab, merges };
    })();
    await emit('subword_prefix', doc({
        pre_tokenizer: { type: 'Whitespace' },
        decoder: { type: 'Sequence', decoders: [{ type: 'WordPiece', prefix: '##', cleanup: false },
                                                { type: 'BPEDecoder', suffix: '</w>' }] },
        model: bpe(spfx, { continuing_subword_prefix: '##', end_of_word_suffix: '</w>', ignore_merges: true,
                           unk_token: null }),
    }), null, texts(['the then there thin thing', 'a ab abc']));

    await emit('roberta', doc({
        added_tokens: [added(0, '<s>'), added(1, '<pad>'), added(2, '</s>'), added(3, '<unk>'),
                       added(4, '<mask>', { lstrip: true })],
        pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
        post_processor: { type: 'Sequence', processors: [
            { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
            { type: 'RobertaProcessing', sep: ['</s>', 2], cls: ['<s>', 0], trim_offsets: true, add_prefix_space: false }] },
        decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
        model: bpe(byteModel(250, ['<s>', '<pad>', '</s>', '<unk>', '<mask>'])),
    }), null, texts(['The <mask> jumped.', '<mask><mask>']));

    await emit('bytelevel_regex', doc({
        pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        model: bpe(byteModel(300)),
    }), null, texts(["I'm  don't   x 'll\n\n  end  ", '   ', '\n \n']));

    // Oniguruma regex traps, one Split each, over a byte-level model so every
    // piece boundary shows in the ids.
    const traps = {
        regex_space: '\\s+',
        regex_nonspace: '\\S+',
        regex_word: '\\w+',
        regex_hex: '\\h+',
        regex_interval_plus: '[a-z]{1,2}+',
        regex_anchors: '^.|.$',
        regex_empty: 'z*',
        regex_case: "(?i:'s|'t|'re)|\\p{L}+",
        regex_class: '[^\\s\\p{L}]+|\\d{2,3}',
        regex_unicode_escape: '\\u00e9+|[\\u0300-\\u036f]',
    };
    const bm = byteModel(300);
    for (const [name, re] of Object.entries(traps)) {
        await emit(name, doc({
            pre_tokenizer: { type: 'Sequence', pretokenizers: [
                { type: 'Split', pattern: { Regex: re }, behavior: 'Isolated', invert: false },
                { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false }] },
            decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
            model: bpe(bm),
        }), null, texts(['line1\nline2\n\nline3', 'zazzbz', 'abcdefg hij', 'dead beef 0xCAFE', "'S 'T 'RE 'ſ",
                         'café cafe\u0301 ééé']).concat(SOUP.slice(0, 100)));
    }
})();
