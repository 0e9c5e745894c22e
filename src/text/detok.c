/* detok.c — id -> text for `vllmc generate`, from tokenizer.json's vocab.
 *
 * Handles the two decoders nearly every target model uses: byte-level BPE
 * (GPT-2's byte-to-unicode map, Qwen/Llama 3/...) and SentencePiece-style
 * vocabularies ("▁" for a space, "<0xNN>" byte fallback). Added tokens decode
 * to their content. This is the small decoder the foundation needs to show
 * text; the full tokenizer (encode, normalizers, special-token handling,
 * streaming) is src/text's tokenizer, which supersedes it.
 *
 * Does not: encode, or apply normalizers/post-processors. */
#include "text/detok.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

struct detok {
    char **piece;     /* [n] raw vocab strings (NULL for unused ids) */
    int n;
    bool byte_level;
};

static int add_piece(struct detok *d, json_int_t id, const char *s) {
    if (id < 0 || id > (1 << 24)) return -1;
    if (id >= d->n) {
        int nn = (int)id + 1;
        char **np = realloc(d->piece, (size_t)nn * sizeof *np);
        if (!np) return -1;
        memset(np + d->n, 0, (size_t)(nn - d->n) * sizeof *np);
        d->piece = np;
        d->n = nn;
    }
    free(d->piece[id]);
    d->piece[id] = xstrdup(s);
    return 0;
}

static bool has_type(const json_t *o, const char *type) {
    if (!json_is_object(o)) return false;
    const char *t = json_string_value(json_object_get(o, "type"));
    if (t && !strcmp(t, type)) return true;
    json_t *arr = json_object_get(o, "decoders");
    if (!arr) arr = json_object_get(o, "pretokenizers");
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (has_type(json_array_get(arr, i), type)) return true;
    return false;
}

int detok_load(struct detok **out, const char *dir, char *err, size_t errlen) {
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return errf(err, errlen, "%s: %s", path, je.text);
    struct detok *d = xcalloc(1, sizeof *d);
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    const char *key;
    json_t *val;
    if (json_is_object(vocab)) {
        json_object_foreach(vocab, key, val) {
            if (json_is_integer(val)) add_piece(d, json_integer_value(val), key);
        }
    } else if (json_is_array(vocab)) { /* Unigram: [[piece, score], ...] */
        for (size_t i = 0; i < json_array_size(vocab); i++) {
            const char *s = json_string_value(json_array_get(json_array_get(vocab, i), 0));
            if (s) add_piece(d, (json_int_t)i, s);
        }
    }
    json_t *added = json_object_get(root, "added_tokens");
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        const char *s = json_string_value(json_object_get(a, "content"));
        json_t *id = json_object_get(a, "id");
        if (s && json_is_integer(id)) add_piece(d, json_integer_value(id), s);
    }
    d->byte_level = has_type(json_object_get(root, "decoder"), "ByteLevel") ||
                    has_type(json_object_get(root, "pre_tokenizer"), "ByteLevel");
    json_decref(root);
    if (d->n == 0) {
        detok_free(d);
        return errf(err, errlen, "%s: no vocabulary found", path);
    }
    *out = d;
    return 0;
}

void detok_free(struct detok *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) free(d->piece[i]);
    free(d->piece);
    free(d);
}

/* GPT-2 byte-level: bytes 33..126, 161..172, 174..255 map to themselves;
 * the other 68 bytes map to U+0100.. in order. Invert one code point. */
static int byte_of_codepoint(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp >= 256 && cp < 256 + 68) {
        int k = (int)(cp - 256), b;
        for (b = 0; b < 256; b++) {
            if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) continue;
            if (k-- == 0) return b;
        }
    }
    return -1;
}

static uint32_t utf8_next(const unsigned char **p) {
    const unsigned char *s = *p;
    uint32_t c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
    if (n == 2) c = ((c & 0x1f) << 6) | (s[1] & 0x3f);
    else if (n == 3) c = ((c & 0x0f) << 12) | ((s[1] & 0x3f) << 6) | (s[2] & 0x3f);
    else if (n == 4) c = ((c & 0x07) << 18) | ((s[1] & 0x3f) << 12) | ((s[2] & 0x3f) << 6) | (s[3] & 0x3f);
    for (int i = 0; i < n && **p; i++) (*p)++;
    return c;
}

size_t detok_piece(const struct detok *d, int id, char *buf, size_t cap) {
    if (id < 0 || id >= d->n || !d->piece[id] || cap == 0) return 0;
    const char *s = d->piece[id];
    size_t o = 0;
    if (d->byte_level) {
        const unsigned char *p = (const unsigned char *)s;
        while (*p && o < cap) {
            const unsigned char *start = p;
            int b = byte_of_codepoint(utf8_next(&p));
            if (b >= 0) buf[o++] = (char)b;
            else /* added token text that is not byte-mapped: copy as is */
                for (const unsigned char *q = start; q < p && o < cap; q++) buf[o++] = (char)*q;
        }
        return o;
    }
    unsigned hex;
    if (strlen(s) == 6 && sscanf(s, "<0x%2X>", &hex) == 1) {
        buf[o++] = (char)hex;
        return o;
    }
    for (const char *p = s; *p && o < cap;) {
        if (!strncmp(p, "\xe2\x96\x81", 3)) { buf[o++] = ' '; p += 3; }
        else buf[o++] = *p++;
    }
    return o;
}
