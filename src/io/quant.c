/* quant.c — quantization configs, preflight and binding of quantized
 * tensors; see quant.h. */
#include "io/quant.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static bool mlx_bits_ok(int b) { return b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8; }
static bool mlx_group_ok(int g) { return g == 32 || g == 64 || g == 128; }

/* Integer member (JSON integer, or a real with an integral value); def if absent. */
static int get_int(json_t *o, const char *key, int def, bool *bad) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return def;
    if (json_is_integer(v)) return (int)json_integer_value(v);
    if (json_is_real(v) && json_real_value(v) == (double)(int)json_real_value(v)) return (int)json_real_value(v);
    *bad = true;
    return def;
}

/* ---- AWQ preflight ------------------------------------------------------------- */

static int awq_preflight(struct quant_cfg *q, json_t *qc, char *err, size_t errlen) {
    bool bad = false;
    json_t *ver = json_object_get(qc, "version");
    if (ver && !json_is_null(ver)) {
        const char *vs = json_string_value(ver);
        if (!vs) return errf(err, errlen, "AWQ: quantization_config.version must be a string");
        if (strcasecmp(vs, "gemm") != 0)
            return errf(err, errlen,
                        "AWQ version '%s' is not supported: only the GEMM layout (version \"gemm\") can be loaded "
                        "(GEMV, Marlin, ExLlama and IPEX pack their weights differently)",
                        vs);
    }
    int bits = json_object_get(qc, "bits") ? get_int(qc, "bits", 4, &bad) : get_int(qc, "w_bit", 4, &bad);
    int group = json_object_get(qc, "group_size") ? get_int(qc, "group_size", 128, &bad)
                                                  : get_int(qc, "q_group_size", 128, &bad);
    if (bad) return errf(err, errlen, "AWQ: bits/w_bit and group_size/q_group_size must be integers");
    if (bits != 4) return errf(err, errlen, "AWQ with %d-bit weights is not supported (only 4-bit)", bits);
    if (group != 128)
        return errf(err, errlen, "AWQ with group size %d is not supported (only group size 128)", group);
    json_t *zp = json_object_get(qc, "zero_point");
    if (zp && json_is_false(zp))
        return errf(err, errlen, "AWQ with zero_point false (symmetric) is not supported (only zero_point true)");
    q->method = QUANT_AWQ;
    q->bits = bits;
    q->group_size = group;
    return 0;
}

/* ---- MLX ----------------------------------------------------------------------- */

static int mlx_parse(struct quant_cfg *q, json_t *o, char *err, size_t errlen) {
    bool bad = false;
    q->bits = get_int(o, "bits", 4, &bad);
    q->group_size = get_int(o, "group_size", 64, &bad);
    if (bad) return errf(err, errlen, "quantization: bits and group_size must be integers");
    json_t *mode = json_object_get(o, "mode");
    if (mode && !json_is_null(mode)) {
        const char *ms = json_string_value(mode);
        if (!ms || strcasecmp(ms, "affine") != 0)
            return errf(err, errlen, "quantization mode '%s' is not supported (only affine)", ms ? ms : "?");
    }
    if (!mlx_bits_ok(q->bits)) return errf(err, errlen, "quantization: %d bits is not supported (2, 3, 4, 5, 6, 8)", q->bits);
    if (!mlx_group_ok(q->group_size))
        return errf(err, errlen, "quantization: group size %d is not supported (32, 64, 128)", q->group_size);
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) if (json_is_object(v) || json_is_false(v)) n++;
    q->ov = xcalloc(n ? n : 1, sizeof *q->ov);
    json_object_foreach(o, key, v) {
        if (!json_is_object(v) && !json_is_false(v)) continue;
        struct quant_override *ov = &q->ov[q->n_ov++];
        ov->module = xstrdup(key);
        ov->quantized = json_is_object(v);
        ov->bits = q->bits;
        ov->group_size = q->group_size;
        if (!ov->quantized) continue;
        ov->bits = get_int(v, "bits", q->bits, &bad);
        ov->group_size = get_int(v, "group_size", q->group_size, &bad);
        json_t *m = json_object_get(v, "mode");
        if (m && json_is_string(m) && strcasecmp(json_string_value(m), "affine") != 0)
            return errf(err, errlen, "quantization of '%s': mode '%s' is not supported (only affine)", key,
                        json_string_value(m));
        if (bad || !mlx_bits_ok(ov->bits) || !mlx_group_ok(ov->group_size))
            return errf(err, errlen, "quantization of '%s': bits %d / group size %d not supported", key, ov->bits,
                        ov->group_size);
    }
    q->method = QUANT_MLX;
    return 0;
}

int quant_cfg_parse(struct quant_cfg *q, const char *json_text, size_t len, char *err, size_t errlen) {
    memset(q, 0, sizeof *q);
    json_error_t je;
    json_t *root = json_loadb(json_text, len, 0, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return errf(err, errlen, "config.json: %s (line %d)", root ? "not an object" : je.text, je.line);
    }
    int rc = 0;
    json_t *qc = json_object_get(root, "quantization_config"), *mq = json_object_get(root, "quantization");
    if (qc && !json_is_object(qc)) qc = NULL;
    if (mq && !json_is_object(mq)) mq = NULL;
    json_t *meth = qc ? json_object_get(qc, "quant_method") : NULL;
    if (meth) {
        const char *ms = json_string_value(meth);
        if (ms && strcasecmp(ms, "awq") == 0) rc = awq_preflight(q, qc, err, errlen);
        else if (ms && strcasecmp(ms, "gptq") == 0)
            rc = errf(err, errlen, "GPTQ checkpoints (quant_method \"gptq\") are not supported; "
                      "supported quantized formats: MLX affine and AWQ (GEMM)");
        else
            rc = errf(err, errlen, "quant_method '%s' is not supported; supported quantized formats: "
                      "MLX affine and AWQ (GEMM)", ms ? ms : "?");
    } else if (mq || qc) {
        rc = mlx_parse(q, mq ? mq : qc, err, errlen);
    }
    json_decref(root);
    if (rc) quant_cfg_free(q);
    return rc;
}

int quant_cfg_load(struct quant_cfg *q, const char *dir, char *err, size_t errlen) {
    memset(q, 0, sizeof *q);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len;
    char *text = file_read_all(path, &len, err, errlen);
    if (!text) return -1;
    int rc = quant_cfg_parse(q, text, len, err, errlen);
    free(text);
    return rc;
}

void quant_cfg_free(struct quant_cfg *q) {
    for (int i = 0; i < q->n_ov; i++) free(q->ov[i].module);
    free(q->ov);
    memset(q, 0, sizeof *q);
}

bool quant_module_params(const struct quant_cfg *q, const char *module, int *bits, int *group_size) {
    *bits = q->bits;
    *group_size = q->group_size;
    for (int i = 0; i < q->n_ov; i++) {
        if (strcmp(q->ov[i].module, module) != 0) continue;
        *bits = q->ov[i].bits;
        *group_size = q->ov[i].group_size;
        return q->ov[i].quantized;
    }
    return true;
}

/* ---- binding ------------------------------------------------------------------- */

static void shape_str(const struct st_tensor *t, char *buf, size_t len) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Find module.suffix and check its dtype (one of dts) and 2-D shape. */
static const struct st_tensor *need(const struct st_set *st, const char *module, const char *suffix,
                                    const enum dtype *dts, int ndt, int64_t d0, int64_t d1, char *err,
                                    size_t errlen) {
    char name[600];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    const struct st_tensor *t = st_find(st, name);
    if (!t) {
        errf(err, errlen, "quantized tensor '%s' is missing from the checkpoint", name);
        return NULL;
    }
    bool dt_ok = false;
    for (int i = 0; i < ndt; i++) dt_ok |= t->dtype == dts[i];
    if (!dt_ok) {
        char want[64] = "";
        for (int i = 0; i < ndt; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s", i ? "/" : "", dtype_name(dts[i]));
        errf(err, errlen, "%s: quantized tensor '%s' has dtype %s, expected %s", t->file, name,
             dtype_name(t->dtype), want);
        return NULL;
    }
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1) {
        char s[128];
        shape_str(t, s, sizeof s);
        errf(err, errlen, "%s: quantized tensor '%s' has shape %s, expected [%lld, %lld]", t->file, name, s,
             (long long)d0, (long long)d1);
        return NULL;
    }
    return t;
}

int quant_bind_mlx(const struct st_set *st, const char *module, int64_t rows, int64_t cols, int bits,
                   int group_size, struct bk_weight *w, char *err, size_t errlen) {
    if (cols % group_size != 0 || (cols * bits) % 32 != 0)
        return errf(err, errlen, "quantized module '%s': %lld input features are not a multiple of the group "
                    "size %d (and of 32/bits codes per word) for %d-bit codes", module, (long long)cols,
                    group_size, bits);
    static const enum dtype u32[] = { DT_U32 }, fl[] = { DT_BF16, DT_F16, DT_F32 };
    const struct st_tensor *tw = need(st, module, "weight", u32, 1, rows, cols * bits / 32, err, errlen);
    if (!tw) return -1;
    const struct st_tensor *ts = need(st, module, "scales", fl, 3, rows, cols / group_size, err, errlen);
    if (!ts) return -1;
    enum dtype sd[] = { ts->dtype };
    const struct st_tensor *tb = need(st, module, "biases", sd, 1, rows, cols / group_size, err, errlen);
    if (!tb) return -1;
    *w = (struct bk_weight){ .dtype = ts->dtype, .rows = rows, .cols = cols, .data = tw->data, .fmt = BK_W_AFFINE,
                             .bits = bits, .group_size = group_size, .scales = ts->data, .biases = tb->data };
    return 0;
}

size_t quant_awq_bytes(int64_t rows, int64_t cols, int group_size) {
    size_t codes = ((size_t)rows * (size_t)cols / 2 + 3) & ~(size_t)3;
    return codes + 2 * (size_t)rows * (size_t)(cols / group_size) * sizeof(float);
}

static uint32_t rd32(const void *p, size_t i) {
    uint32_t v;
    memcpy(&v, (const char *)p + 4 * i, 4);
    return v;
}

int quant_bind_awq(const struct st_set *st, const char *module, int64_t rows, int64_t cols, int group_size,
                   void *mem, struct bk_weight *w, char *err, size_t errlen) {
    if (cols % group_size != 0 || rows % 8 != 0)
        return errf(err, errlen, "AWQ module '%s': shape [%lld, %lld] is not a multiple of the group size %d "
                    "(inputs) and of 8 (outputs)", module, (long long)rows, (long long)cols, group_size);
    static const enum dtype i32[] = { DT_I32, DT_U32 }, f16[] = { DT_F16 };
    const int64_t G = cols / group_size;
    const struct st_tensor *tq = need(st, module, "qweight", i32, 2, cols, rows / 8, err, errlen);
    if (!tq) return -1;
    const struct st_tensor *tz = need(st, module, "qzeros", i32, 2, G, rows / 8, err, errlen);
    if (!tz) return -1;
    const struct st_tensor *ts = need(st, module, "scales", f16, 1, G, rows, err, errlen);
    if (!ts) return -1;
    /* Nibble i of a packed word holds column 8c + order[i]; inverse: column
     * 8c + j sits in nibble slot[j]. */
    static const int slot[8] = { 0, 4, 1, 5, 2, 6, 3, 7 };
    uint8_t *codes = mem;
    const size_t row_bytes = (size_t)cols / 2;
    float *sc = (float *)(codes + (((size_t)rows * row_bytes + 3) & ~(size_t)3));
    float *bi = sc + (size_t)rows * (size_t)G;
    memset(codes, 0, (size_t)rows * row_bytes);
    for (int64_t k = 0; k < cols; k++) {
        for (int64_t c = 0; c < rows / 8; c++) {
            uint32_t word = rd32(tq->data, (size_t)k * (size_t)(rows / 8) + (size_t)c);
            for (int j = 0; j < 8; j++) {
                unsigned v = (word >> (4 * slot[j])) & 15u;
                uint8_t *b = codes + (size_t)(8 * c + j) * row_bytes + (size_t)k / 2;
                *b |= (uint8_t)(k % 2 ? v << 4 : v);
            }
        }
    }
    for (int64_t g = 0; g < G; g++) {
        for (int64_t c = 0; c < rows / 8; c++) {
            uint32_t word = rd32(tz->data, (size_t)g * (size_t)(rows / 8) + (size_t)c);
            for (int j = 0; j < 8; j++) {
                int64_t n = 8 * c + j;
                uint16_t h;
                memcpy(&h, (const char *)ts->data + 2 * ((size_t)g * (size_t)rows + (size_t)n), 2);
                float s = f16_to_f32(h);
                float z = (float)((word >> (4 * slot[j])) & 15u);
                sc[(size_t)n * G + g] = s;
                bi[(size_t)n * G + g] = -z * s; /* exact: an 11-bit mantissa times 4 bits */
            }
        }
    }
    *w = (struct bk_weight){ .dtype = DT_F32, .rows = rows, .cols = cols, .data = codes, .fmt = BK_W_AFFINE,
                             .bits = 4, .group_size = group_size, .scales = sc, .biases = bi };
    return 0;
}
