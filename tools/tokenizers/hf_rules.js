// hf_rules.js — what transformers does on top of tokenizer.json, for the
// golden generators: its update_post_processor (v5's TokenizersBackend, v4's
// Llama/Gemma fast tokenizers) replaces the post-processor with
// TemplateProcessing("[bos:0 ]$A:0[ eos:0]") when tokenizer_config.json sets
// add_bos_token / add_eos_token, or for a Llama/Gemma class (add_bos_token
// defaults to true there), or when tokenizer.json has no post-processor.
'use strict';
const tk = require('@anush008/tokenizers');

function tokenString(v) {
    if (typeof v === 'string') return v;
    if (v && typeof v === 'object' && typeof v.content === 'string') return v.content;
    return null;
}

// Applies the rule to tok; returns the template string, or null if unchanged.
function transformersPostProcessor(tok, cfg, json) {
    const cls = cfg.tokenizer_class || '';
    const llamaLike = /^(Llama|CodeLlama|Gemma)Tokenizer(Fast)?$/.test(cls);
    const explicit = 'add_bos_token' in cfg || 'add_eos_token' in cfg || llamaLike;
    if (!explicit && json.post_processor !== null) return null;
    let addBos = 'add_bos_token' in cfg ? !!cfg.add_bos_token : llamaLike;
    let addEos = !!cfg.add_eos_token;
    const bos = tokenString(cfg.bos_token), eos = tokenString(cfg.eos_token);
    if (bos === null) addBos = false;
    if (eos === null) addEos = false;
    const single = `${addBos ? bos + ':0 ' : ''}$A:0${addEos ? ' ' + eos + ':0' : ''}`;
    const pair = `${single}${addBos ? ' ' + bos + ':1' : ''} $B:1${addEos ? ' ' + eos + ':1' : ''}`;
    const special = [];
    if (addBos) special.push([bos, tok.tokenToId(bos)]);
    if (addEos) special.push([eos, tok.tokenToId(eos)]);
    tok.setPostProcessor(tk.templateProcessing(single, pair, special));
    return single;
}

// Random "Unicode soup": code points from every plane and block (recent
// additions included), contractions, spaces, digits. The place where Unicode
// versions of the regex and normalization tables show.
function soupTexts(n, seed) {
    let s = seed >>> 0 || 1;
    const r = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
    const ranges = [[0x20, 0x7e], [0x9, 0xd], [0xa0, 0x24f], [0x250, 0x2ff], [0x300, 0x36f], [0x370, 0x52f],
                    [0x530, 0x8ff], [0x900, 0xdff], [0xe00, 0xfff], [0x1000, 0x1fff], [0x2000, 0x2bff], [0x2c00, 0x2fff],
                    [0x3000, 0x33ff], [0x3400, 0x4dbf], [0x4e00, 0x9fff], [0xa000, 0xabff], [0xac00, 0xd7ff],
                    [0xf900, 0xffff], [0x10000, 0x1ffff], [0x20000, 0x3ffff], [0xe0000, 0xe01ff]];
    const bits = [' ', '  ', '\n', "'s", "'LL", '123', 'ab', '\t'];
    const out = [];
    for (let k = 0; k < n; k++) {
        const len = r() % 40;
        let t = '';
        for (let i = 0; i < len; i++) {
            const x = r();
            if (x % 6 === 0) { t += bits[(x >>> 3) % 8]; continue; }
            const g = ranges[(x >>> 4) % ranges.length];
            let c = g[0] + ((x >>> 9) % (g[1] - g[0] + 1));
            if (c >= 0xd800 && c <= 0xdfff) c = 0x41;
            t += String.fromCodePoint(c);
        }
        out.push(t);
    }
    return out;
}

module.exports = { transformersPostProcessor, tokenString, soupTexts };
