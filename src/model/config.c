/* config.c — config.json (+ generation_config.json) -> struct hparams.
 *
 * Reads both dialects: the older top-level `rope_theta` + `rope_scaling`
 * (with `type` or `rope_type`) and transformers-v5 `rope_parameters`, which
 * may hold one entry per layer type ({"full_attention": {...},
 * "sliding_attention": {...}}). Wrappers such as
 * Gemma3ForConditionalGeneration keep the language model's settings in
 * `text_config`; those are read and the rest (vision) ignored.
 *
 * Family defaults follow transformers' config classes for keys a checkpoint
 * may omit. The architecture table maps HF `architectures` strings to a
 * family; aliases (Mistral, Yi, DeepSeek-R1-Distill-Qwen) reuse a family. */
#include "model/model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const struct arch_row {
    const char *arch;
    enum model_family family;
} arch_table[] = {
    { "LlamaForCausalLM", FAM_LLAMA },
    { "MistralForCausalLM", FAM_LLAMA },
    { "Qwen2ForCausalLM", FAM_QWEN2 },
    { "Qwen3ForCausalLM", FAM_QWEN3 },
    { "Phi3ForCausalLM", FAM_PHI3 },
    { "GraniteForCausalLM", FAM_GRANITE },
    { "SmolLM3ForCausalLM", FAM_SMOLLM3 },
    { "Gemma3ForCausalLM", FAM_GEMMA3 },
    { "Gemma3ForConditionalGeneration", FAM_GEMMA3 },
};

static double jnum(const json_t *o, const char *key, double dflt) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_number(v) ? json_number_value(v) : dflt;
}
static int jint(const json_t *o, const char *key, int dflt) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}
static int jbool(const json_t *o, const char *key, int dflt) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}
static const char *jstr(const json_t *o, const char *key) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_float_list(const json_t *arr, float **out, int *n) {
    if (!json_is_array(arr)) return -1;
    size_t len = json_array_size(arr);
    float *f = xmalloc((len ? len : 1) * sizeof(float));
    for (size_t i = 0; i < len; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_number(v)) { free(f); return -1; }
        f[i] = (float)json_number_value(v);
    }
    *out = f;
    *n = (int)len;
    return 0;
}

/* Fill a rope_cfg from a rope dict (v5 rope_parameters entry or legacy
 * rope_scaling), with theta and orig_max_pos defaults from the caller. */
static int rope_parse(struct rope_cfg *r, const json_t *d, double theta_dflt, int orig_dflt, char *err,
                      size_t errlen) {
    memset(r, 0, sizeof *r);
    r->theta = theta_dflt;
    r->factor = 1.0;
    r->orig_max_pos = orig_dflt;
    r->beta_fast = 32;
    r->beta_slow = 1;
    r->truncate = true;
    r->attn_factor = -1;
    if (!d || json_is_null(d)) return 0;
    if (!json_is_object(d)) return errf(err, errlen, "config.json: rope parameters must be an object");
    r->theta = jnum(d, "rope_theta", theta_dflt);
    const char *t = jstr(d, "rope_type");
    if (!t) t = jstr(d, "type");
    if (!t || !strcmp(t, "default")) r->type = ROPE_DEFAULT;
    else if (!strcmp(t, "linear")) r->type = ROPE_LINEAR;
    else if (!strcmp(t, "dynamic")) r->type = ROPE_DYNAMIC;
    else if (!strcmp(t, "llama3")) r->type = ROPE_LLAMA3;
    else if (!strcmp(t, "yarn")) r->type = ROPE_YARN;
    else if (!strcmp(t, "longrope") || !strcmp(t, "su")) r->type = ROPE_LONGROPE;
    else return errf(err, errlen, "config.json: rope type '%s' is not supported", t);
    r->factor = jnum(d, "factor", 1.0);
    r->orig_max_pos = jint(d, "original_max_position_embeddings", orig_dflt);
    r->low_freq_factor = jnum(d, "low_freq_factor", 1.0);
    r->high_freq_factor = jnum(d, "high_freq_factor", 4.0);
    double bf = jnum(d, "beta_fast", 0), bs = jnum(d, "beta_slow", 0);
    r->beta_fast = bf ? bf : 32; /* `or 32` in transformers: 0/null mean the default */
    r->beta_slow = bs ? bs : 1;
    r->mscale = jnum(d, "mscale", 0);
    r->mscale_all_dim = jnum(d, "mscale_all_dim", 0);
    r->truncate = jbool(d, "truncate", 1);
    r->attn_factor = jnum(d, "attention_factor", -1);
    if (r->type == ROPE_LONGROPE) {
        if (parse_float_list(json_object_get(d, "short_factor"), &r->short_factor, &r->n_short) ||
            parse_float_list(json_object_get(d, "long_factor"), &r->long_factor, &r->n_long))
            return errf(err, errlen, "config.json: longrope needs numeric short_factor and long_factor lists");
        if (!json_is_number(json_object_get(d, "factor"))) r->factor = 0; /* derive from max/orig */
    }
    if (r->type == ROPE_LLAMA3 && !json_is_integer(json_object_get(d, "original_max_position_embeddings")))
        return errf(err, errlen, "config.json: llama3 rope scaling needs original_max_position_embeddings");
    if (r->theta <= 0) return errf(err, errlen, "config.json: rope_theta must be positive");
    if ((r->type == ROPE_LINEAR || r->type == ROPE_DYNAMIC || r->type == ROPE_LLAMA3) && !(r->factor > 0))
        return errf(err, errlen, "config.json: rope scaling factor must be positive (got %g)", r->factor);
    if ((r->type == ROPE_LLAMA3 || r->type == ROPE_YARN || r->type == ROPE_LONGROPE) && r->orig_max_pos < 2)
        return errf(err, errlen, "config.json: original_max_position_embeddings must be at least 2 (got %d)",
                    r->orig_max_pos);
    if (r->type == ROPE_LLAMA3 && !(r->high_freq_factor > r->low_freq_factor))
        return errf(err, errlen, "config.json: llama3 high_freq_factor must exceed low_freq_factor");
    return 0;
}

static void rope_free(struct rope_cfg *r) {
    free(r->short_factor);
    free(r->long_factor);
    r->short_factor = r->long_factor = NULL;
}

void hparams_free(struct hparams *hp) {
    rope_free(&hp->rope);
    rope_free(&hp->rope_local);
}

static int load_json(const char *path, json_t **out, char *err, size_t errlen) {
    json_error_t je;
    *out = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!*out) return errf(err, errlen, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return errf(err, errlen, "%s: not a JSON object", path);
    }
    return 0;
}

static void read_eos(struct hparams *hp, const json_t *v) {
    if (json_is_integer(v)) {
        hp->n_eos = 1;
        hp->eos_token_ids[0] = (int)json_integer_value(v);
    } else if (json_is_array(v)) {
        hp->n_eos = 0;
        for (size_t i = 0; i < json_array_size(v) && hp->n_eos < (int)ARRAY_LEN(hp->eos_token_ids); i++)
            if (json_is_integer(json_array_get(v, i)))
                hp->eos_token_ids[hp->n_eos++] = (int)json_integer_value(json_array_get(v, i));
    }
}

static int parse_dtype(const char *s, enum dtype *dt) {
    if (!s) return -1;
    if (!strcmp(s, "float32")) *dt = DT_F32;
    else if (!strcmp(s, "bfloat16")) *dt = DT_BF16;
    else if (!strcmp(s, "float16")) *dt = DT_F16;
    else return -1;
    return 0;
}

static int hparams_from_json(struct hparams *hp, json_t *root, char *err, size_t errlen) {
    json_t *archs = json_object_get(root, "architectures");
    const char *arch = json_is_array(archs) ? json_string_value(json_array_get(archs, 0)) : NULL;
    if (!arch) return errf(err, errlen, "config.json: no \"architectures\" entry");
    int fam = -1;
    for (size_t i = 0; i < ARRAY_LEN(arch_table); i++)
        if (!strcmp(arch, arch_table[i].arch)) fam = (int)arch_table[i].family;
    if (fam < 0) {
        char list[1024] = "";
        for (size_t i = 0; i < ARRAY_LEN(arch_table); i++) {
            strncat(list, arch_table[i].arch, sizeof list - strlen(list) - 1);
            if (i + 1 < ARRAY_LEN(arch_table)) strncat(list, ", ", sizeof list - strlen(list) - 1);
        }
        return errf(err, errlen, "config.json: architecture '%s' is not supported (supported: %s)", arch, list);
    }
    hp->family = (enum model_family)fam;
    snprintf(hp->arch, sizeof hp->arch, "%s", arch);

    /* The language model's settings: text_config for wrappers. */
    const json_t *c = root;
    json_t *tc = json_object_get(root, "text_config");
    if (json_is_object(tc)) c = tc;

    hp->d_model = jint(c, "hidden_size", 0);
    hp->n_layer = jint(c, "num_hidden_layers", 0);
    hp->n_head = jint(c, "num_attention_heads", 0);
    hp->n_kv_head = jint(c, "num_key_value_heads", hp->n_head);
    hp->d_ff = jint(c, "intermediate_size", 0);
    hp->n_vocab = jint(c, "vocab_size", 0);
    if (hp->family == FAM_GEMMA3 && hp->n_vocab == 0) hp->n_vocab = 262208;
    hp->max_pos = jint(c, "max_position_embeddings", 0);
    if (hp->d_model <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_kv_head <= 0 || hp->d_ff <= 0 ||
        hp->n_vocab <= 0)
        return errf(err, errlen,
                    "config.json: hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, "
                    "intermediate_size and vocab_size must be positive integers (got %d, %d, %d, %d, %d, %d)",
                    hp->d_model, hp->n_layer, hp->n_head, hp->n_kv_head, hp->d_ff, hp->n_vocab);
    if (hp->n_layer > MODEL_MAX_LAYERS)
        return errf(err, errlen, "config.json: %d layers is more than the supported %d", hp->n_layer,
                    MODEL_MAX_LAYERS);
    if (hp->n_head % hp->n_kv_head != 0)
        return errf(err, errlen, "config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                    hp->n_head, hp->n_kv_head);
    hp->head_dim = jint(c, "head_dim", 0);
    if (hp->head_dim <= 0) {
        if (hp->family == FAM_GEMMA3 && json_object_get(c, "head_dim") == NULL)
            hp->head_dim = 256; /* Gemma3TextConfig default */
        else
            hp->head_dim = hp->d_model / hp->n_head;
    }
    if (hp->max_pos <= 0) hp->max_pos = hp->family == FAM_GEMMA3 ? 131072 : 2048;

    enum dtype dt = DT_F32;
    const char *ds = jstr(c, "torch_dtype");
    if (!ds) ds = jstr(c, "dtype");
    if (!ds) ds = jstr(root, "torch_dtype");
    if (!ds) ds = jstr(root, "dtype");
    if (ds && parse_dtype(ds, &dt) != 0)
        return errf(err, errlen, "config.json: dtype '%s' is not supported (float32, bfloat16, float16)", ds);
    hp->dtype = dt;

    bool gemma = hp->family == FAM_GEMMA3;
    hp->norm_eps = (float)jnum(c, "rms_norm_eps", jnum(c, "layer_norm_eps", gemma ? 1e-6 : 1e-6));
    hp->act = BK_ACT_SILU;
    const char *act = jstr(c, "hidden_activation");
    if (!act) act = jstr(c, "hidden_act");
    if (act) {
        if (!strcmp(act, "silu") || !strcmp(act, "swish")) hp->act = BK_ACT_SILU;
        else if (!strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_new") || !strcmp(act, "gelu_fast"))
            hp->act = BK_ACT_GELU_TANH;
        else if (!strcmp(act, "gelu")) hp->act = BK_ACT_GELU;
        else if (!strcmp(act, "relu")) hp->act = BK_ACT_RELU;
        else return errf(err, errlen, "config.json: activation '%s' is not supported", act);
    } else if (gemma) hp->act = BK_ACT_GELU_TANH;

    /* tie_word_embeddings: -1 = not said; resolved at bind time from whether
     * lm_head.weight exists (transformers omits keys equal to the defaults). */
    json_t *tie = json_object_get(c, "tie_word_embeddings");
    if (!tie) tie = json_object_get(root, "tie_word_embeddings");
    hp->tie_explicit = json_is_boolean(tie);
    hp->tie_embeddings = hp->tie_explicit ? json_is_true(tie) : gemma;

    bool ab = jbool(c, "attention_bias", hp->family == FAM_QWEN2);
    hp->attn_bias = ab || hp->family == FAM_QWEN2;
    hp->o_bias = hp->family == FAM_QWEN2 ? false : ab;
    hp->mlp_bias = jbool(c, "mlp_bias", 0);
    hp->qk_norm = hp->family == FAM_QWEN3 || gemma;
    hp->norm_plus_one = gemma;
    hp->sandwich_norms = gemma;

    hp->emb_scale = 1.0f;
    hp->resid_scale = 1.0f;
    hp->logit_scale = 1.0f;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    if (gemma) {
        /* transformers rounds sqrt(hidden) to the model's dtype before use */
        float s = sqrtf((float)hp->d_model);
        if (dt == DT_BF16) s = bf16_to_f32(f32_to_bf16(s));
        else if (dt == DT_F16) s = f16_to_f32(f32_to_f16(s));
        hp->emb_scale = s;
        double qs = jnum(c, "query_pre_attn_scalar", hp->head_dim);
        hp->attn_scale = (float)(1.0 / sqrt(qs));
        hp->final_softcap = (float)jnum(c, "final_logit_softcapping", 0);
        /* transformers' Gemma3ForConditionalGeneration returns lm_head(h) without
         * the text config's final softcap (Gemma3ForCausalLM applies it). Real
         * Gemma 3 checkpoints leave it null, so only odd configs notice. */
        if (strstr(hp->arch, "ForConditionalGeneration")) hp->final_softcap = 0;
        hp->attn_softcap = (float)jnum(c, "attn_logit_softcapping", 0);
    }
    if (hp->family == FAM_GRANITE) {
        hp->emb_scale = (float)jnum(c, "embedding_multiplier", 1.0);
        hp->resid_scale = (float)jnum(c, "residual_multiplier", 1.0);
        hp->attn_scale = (float)jnum(c, "attention_multiplier", 1.0);
        hp->logit_scale = (float)(1.0 / jnum(c, "logits_scaling", 1.0));
    }

    /* Sliding windows: layer_types if given, else each family's rule. */
    json_t *sw = json_object_get(c, "sliding_window");
    hp->sliding_window = json_is_integer(sw) ? (int)json_integer_value(sw) : 0;
    if (hp->sliding_window < 0) hp->sliding_window = 0;
    json_t *lt = json_object_get(c, "layer_types");
    memset(hp->layer_sliding, 0, sizeof hp->layer_sliding);
    if (json_is_array(lt)) {
        if ((int)json_array_size(lt) != hp->n_layer)
            return errf(err, errlen, "config.json: layer_types has %zu entries for %d layers", json_array_size(lt),
                        hp->n_layer);
        for (int i = 0; i < hp->n_layer; i++) {
            const char *s = json_string_value(json_array_get(lt, i));
            if (!s) return errf(err, errlen, "config.json: layer_types[%d] is not a string", i);
            if (!strcmp(s, "sliding_attention")) hp->layer_sliding[i] = 1;
            else if (strcmp(s, "full_attention") != 0)
                return errf(err, errlen, "config.json: layer type '%s' is not supported", s);
        }
    } else if (gemma) {
        int pattern = jint(c, "sliding_window_pattern", 6);
        for (int i = 0; i < hp->n_layer; i++) hp->layer_sliding[i] = pattern > 0 && (i + 1) % pattern != 0;
    } else if (hp->family == FAM_QWEN2 || hp->family == FAM_QWEN3) {
        if (jbool(c, "use_sliding_window", 0)) {
            int mwl = jint(c, "max_window_layers", hp->n_layer);
            for (int i = mwl; i < hp->n_layer; i++) hp->layer_sliding[i] = 1;
        }
    } else if (hp->family == FAM_LLAMA || hp->family == FAM_PHI3) {
        /* Mistral and Phi-3 apply sliding_window to every layer when set. */
        if (hp->sliding_window > 0 && strcmp(hp->arch, "LlamaForCausalLM") != 0)
            for (int i = 0; i < hp->n_layer; i++) hp->layer_sliding[i] = 1;
    }
    if (gemma && hp->sliding_window <= 0) hp->sliding_window = 4096;
    for (int i = 0; i < hp->n_layer; i++)
        if (hp->layer_sliding[i] && hp->sliding_window <= 0)
            return errf(err, errlen, "config.json: layer %d is a sliding-window layer but sliding_window is unset", i);

    /* NoPE layers (SmolLM3): no_rope_layers[i] == 1 means layer i uses RoPE. */
    memset(hp->layer_rope, 1, sizeof hp->layer_rope);
    if (hp->family == FAM_SMOLLM3) {
        json_t *nr = json_object_get(c, "no_rope_layers");
        if (json_is_array(nr)) {
            if ((int)json_array_size(nr) != hp->n_layer)
                return errf(err, errlen, "config.json: no_rope_layers has %zu entries for %d layers",
                            json_array_size(nr), hp->n_layer);
            for (int i = 0; i < hp->n_layer; i++)
                hp->layer_rope[i] = json_integer_value(json_array_get(nr, i)) != 0;
        } else {
            int every = jint(c, "no_rope_layer_interval", 4);
            for (int i = 0; i < hp->n_layer; i++) hp->layer_rope[i] = every > 0 ? (i + 1) % every != 0 : 1;
        }
    }

    /* RoPE: v5 rope_parameters (flat or per layer type) or legacy keys. */
    double theta_dflt = gemma ? 1e6 : 10000.0;
    double theta = jnum(c, "rope_theta", theta_dflt);
    int orig = jint(c, "original_max_position_embeddings", hp->max_pos);
    double prf = jnum(c, "partial_rotary_factor", 1.0);
    json_t *rp = json_object_get(c, "rope_parameters");
    int rc = 0;
    hp->has_rope_local = false;
    if (json_is_object(rp) && (json_object_get(rp, "full_attention") || json_object_get(rp, "sliding_attention"))) {
        json_t *full = json_object_get(rp, "full_attention"), *slide = json_object_get(rp, "sliding_attention");
        rc = rope_parse(&hp->rope, full ? full : slide, theta, orig, err, errlen);
        if (!rc && slide) {
            rc = rope_parse(&hp->rope_local, slide, gemma ? 10000.0 : theta, orig, err, errlen);
            hp->has_rope_local = true;
        }
        if (full) prf = jnum(full, "partial_rotary_factor", prf);
    } else if (json_is_object(rp)) {
        rc = rope_parse(&hp->rope, rp, theta, orig, err, errlen);
        prf = jnum(rp, "partial_rotary_factor", prf);
    } else {
        json_t *rs = json_object_get(c, "rope_scaling");
        rc = rope_parse(&hp->rope, json_is_object(rs) ? rs : NULL, theta, orig, err, errlen);
        if (!rc) hp->rope.theta = theta; /* legacy: theta is top-level */
        if (!rc && gemma) {
            rc = rope_parse(&hp->rope_local, NULL, jnum(c, "rope_local_base_freq", 10000.0), orig, err, errlen);
            hp->has_rope_local = true;
        }
    }
    if (rc) return rc;
    if (prf <= 0 || prf > 1) return errf(err, errlen, "config.json: partial_rotary_factor %g out of (0, 1]", prf);
    hp->rot_dim = (int)(hp->head_dim * prf);
    hp->rot_dim &= ~1;
    if (hp->rot_dim <= 0) return errf(err, errlen, "config.json: rotary dimension is zero");
    if (hp->rope.type == ROPE_LONGROPE &&
        (hp->rope.n_short != hp->rot_dim / 2 || hp->rope.n_long != hp->rot_dim / 2))
        return errf(err, errlen, "config.json: longrope short_factor/long_factor have %d/%d entries, expected %d",
                    hp->rope.n_short, hp->rope.n_long, hp->rot_dim / 2);

    hp->bos_token_id = jint(c, "bos_token_id", jint(root, "bos_token_id", -1));
    hp->n_eos = 0;
    json_t *eos = json_object_get(c, "eos_token_id");
    if (!eos) eos = json_object_get(root, "eos_token_id");
    read_eos(hp, eos);
    return 0;
}

int hparams_load(struct hparams *hp, const char *dir, const char *hf_overrides_json, char *err, size_t errlen) {
    memset(hp, 0, sizeof *hp);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *root;
    if (load_json(path, &root, err, errlen)) return -1;
    if (hf_overrides_json && *hf_overrides_json) {
        json_error_t je;
        json_t *ov = json_loads(hf_overrides_json, 0, &je);
        if (!json_is_object(ov)) {
            json_decref(ov);
            json_decref(root);
            return errf(err, errlen, "--hf-overrides: not a JSON object (%s)", je.text);
        }
        json_object_update(root, ov);
        json_decref(ov);
    }
    int rc = hparams_from_json(hp, root, err, errlen);
    json_decref(root);
    if (rc) {
        hparams_free(hp);
        return rc;
    }
    /* generation_config.json overrides eos/bos when present */
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    json_t *gen = json_load_file(path, 0, NULL);
    if (json_is_object(gen)) {
        json_t *eos = json_object_get(gen, "eos_token_id");
        if (eos && !json_is_null(eos)) read_eos(hp, eos);
        hp->bos_token_id = jint(gen, "bos_token_id", hp->bos_token_id);
    }
    json_decref(gen);
    return 0;
}

void hparams_describe(const struct hparams *hp, char *buf, size_t len) {
    static const char *rn[] = { "default", "linear", "dynamic", "llama3", "yarn", "longrope" };
    snprintf(buf, len, "%s: %d layers, hidden %d, heads %d/%d x %d, ffn %d, vocab %d, %s, rope %s theta %g%s",
             hp->arch, hp->n_layer, hp->d_model, hp->n_head, hp->n_kv_head, hp->head_dim, hp->d_ff, hp->n_vocab,
             dtype_name(hp->dtype), rn[hp->rope.type], hp->rope.theta, hp->tie_embeddings ? ", tied" : "");
}
