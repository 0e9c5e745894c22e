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

module.exports = { transformersPostProcessor, tokenString };
