/* rope.c — inverse-frequency tables for every RoPE type transformers knows
 * that the target families use: default, linear, dynamic NTK, llama3, YaRN
 * and LongRoPE. Computed once at load (per sequence length only for dynamic
 * NTK and LongRoPE, whose tables change with the sequence length exactly as
 * transformers' dynamic update does: the sequence length is the context
 * length of the sequence in this step). Values follow transformers'
 * modeling_rope_utils in float32 where it computes in float32. */
#include "model/model.h"

#include <math.h>

bool rope_depends_on_len(const struct rope_cfg *cfg) {
    return cfg->type == ROPE_DYNAMIC || cfg->type == ROPE_LONGROPE;
}

static double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

static double yarn_corr_dim(double rot, int dim, double base, int max_pos) {
    return (dim * log(max_pos / (rot * 2 * M_PI))) / (2 * log(base));
}

void rope_inv_freq(const struct rope_cfg *cfg, int dim, int max_pos, int seq_len, float *inv_freq,
                   float *attn_factor) {
    const int half = dim / 2;
    double base = cfg->theta;
    *attn_factor = 1.0f;
    if (cfg->type == ROPE_DYNAMIC) {
        int L = seq_len > max_pos ? seq_len : max_pos;
        base = base * pow((cfg->factor * L / max_pos) - (cfg->factor - 1), (double)dim / (dim - 2));
    }
    /* transformers: base ** (arange(0, dim, 2).float() / dim) in float32 */
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)dim;
        inv_freq[i] = (float)(1.0 / pow(base, (double)expo));
    }
    switch (cfg->type) {
    case ROPE_DEFAULT:
    case ROPE_DYNAMIC:
        break;
    case ROPE_LINEAR:
        for (int i = 0; i < half; i++) inv_freq[i] = (float)(inv_freq[i] / cfg->factor);
        break;
    case ROPE_LLAMA3: {
        double old_ctx = cfg->orig_max_pos;
        double low_wl = old_ctx / cfg->low_freq_factor, high_wl = old_ctx / cfg->high_freq_factor;
        for (int i = 0; i < half; i++) {
            double f = inv_freq[i], wl = 2 * M_PI / f;
            if (wl > low_wl) f = f / cfg->factor;
            else if (wl >= high_wl) {
                double smooth = (old_ctx / wl - cfg->low_freq_factor) / (cfg->high_freq_factor - cfg->low_freq_factor);
                f = (1 - smooth) * f / cfg->factor + smooth * f;
            }
            inv_freq[i] = (float)f;
        }
        break;
    }
    case ROPE_YARN: {
        int orig = cfg->orig_max_pos > 0 ? cfg->orig_max_pos : max_pos;
        double factor = cfg->factor > 0 ? cfg->factor : (double)max_pos / orig;
        double af = cfg->attn_factor;
        if (af <= 0) {
            if (cfg->mscale != 0 && cfg->mscale_all_dim != 0)
                af = yarn_mscale(factor, cfg->mscale) / yarn_mscale(factor, cfg->mscale_all_dim);
            else af = yarn_mscale(factor, 1);
        }
        double lo = yarn_corr_dim(cfg->beta_fast, dim, base, orig);
        double hi = yarn_corr_dim(cfg->beta_slow, dim, base, orig);
        if (cfg->truncate) { lo = floor(lo); hi = ceil(hi); }
        if (lo < 0) lo = 0;
        if (hi > dim - 1) hi = dim - 1;
        if (lo == hi) hi += 0.001;
        for (int i = 0; i < half; i++) {
            float pos_freq = (float)pow(base, (double)((float)(2 * i) / (float)dim));
            float extra = 1.0f / pos_freq, inter = 1.0f / ((float)factor * pos_freq);
            float ramp = (float)(((float)i - lo) / (hi - lo));
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float ext_factor = 1.0f - ramp;
            inv_freq[i] = inter * (1 - ext_factor) + extra * ext_factor;
        }
        *attn_factor = (float)af;
        break;
    }
    case ROPE_LONGROPE: {
        int orig = cfg->orig_max_pos > 0 ? cfg->orig_max_pos : max_pos;
        double factor = cfg->factor > 0 ? cfg->factor : (double)max_pos / orig;
        double af = cfg->attn_factor;
        if (af <= 0) af = factor <= 1.0 ? 1.0 : sqrt(1 + log(factor) / log((double)orig));
        const float *ext = seq_len > orig ? cfg->long_factor : cfg->short_factor;
        for (int i = 0; i < half; i++) {
            float expo = (float)(2 * i) / (float)dim;
            float p = (float)pow(base, (double)expo);
            inv_freq[i] = 1.0f / (ext[i] * p);
        }
        *attn_factor = (float)af;
        break;
    }
    }
}
