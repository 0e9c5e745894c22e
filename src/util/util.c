/* util.c — see util.h. */
#include "util/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void log_msg(int level, const char *fmt, ...) {
    static const char *tag[] = { "INFO", "WARN", "ERROR" };
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s vllmc: %s\n", tag[level < 0 ? 0 : level > 2 ? 2 : level], buf);
}

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const struct { const char *name; size_t size; } dtypes[DT_COUNT] = {
    [DT_F32] = { "F32", 4 },   [DT_F16] = { "F16", 2 },   [DT_BF16] = { "BF16", 2 },
    [DT_F64] = { "F64", 8 },   [DT_I8] = { "I8", 1 },     [DT_I16] = { "I16", 2 },
    [DT_I32] = { "I32", 4 },   [DT_I64] = { "I64", 8 },   [DT_U8] = { "U8", 1 },
    [DT_U16] = { "U16", 2 },   [DT_U32] = { "U32", 4 },   [DT_U64] = { "U64", 8 },
    [DT_BOOL] = { "BOOL", 1 }, [DT_F8_E4M3] = { "F8_E4M3", 1 },
    [DT_F8_E5M2] = { "F8_E5M2", 1 }, [DT_F8_E8M0] = { "F8_E8M0", 1 },
};

const char *dtype_name(enum dtype t) { return (unsigned)t < DT_COUNT ? dtypes[t].name : "?"; }
size_t dtype_size(enum dtype t) { return (unsigned)t < DT_COUNT ? dtypes[t].size : 0; }
int dtype_from_name(const char *s, enum dtype *out) {
    for (int i = 0; i < DT_COUNT; i++)
        if (strcmp(s, dtypes[i].name) == 0) { *out = (enum dtype)i; return 0; }
    return -1;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else { /* subnormal: renormalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
    else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    union { uint32_t u; float f; } v = { .u = u };
    return v.f;
}

uint16_t f32_to_f16(float f) {
    union { uint32_t u; float f; } v = { .f = f };
    uint32_t sign = (v.u >> 16) & 0x8000, a = v.u & 0x7fffffff;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);          /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);         /* overflow -> inf */
    if (a < 0x38800000u) {                                           /* subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;
        uint32_t man = (a & 0x7fffff) | 0x800000, shift = 126 - (a >> 23);
        uint32_t r = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = a + 0xfff + ((a >> 13) & 1) - 0x38000000u;
    return (uint16_t)(sign | (r >> 13));
}

float dtype_read_f32(const void *p, enum dtype t, size_t i) {
    switch (t) {
    case DT_F32: return ((const float *)p)[i];
    case DT_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case DT_F16: return f16_to_f32(((const uint16_t *)p)[i]);
    case DT_F64: return (float)((const double *)p)[i];
    default: return NAN;
    }
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "vllmc: out of memory (%zu bytes)\n", n); abort(); }
    return p;
}
void *xcalloc(size_t n, size_t m) {
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) { fprintf(stderr, "vllmc: out of memory (%zu x %zu bytes)\n", n, m); abort(); }
    return p;
}
char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

char *file_read_all(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { errf(err, errlen, "%s: %s", path, strerror(errno)); return NULL; }
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); errf(err, errlen, "%s: cannot seek", path); return NULL; }
    long n = ftell(f);
    if (n < 0) { fclose(f); errf(err, errlen, "%s: cannot tell size", path); return NULL; }
    rewind(f);
    char *buf = xmalloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f); free(buf); errf(err, errlen, "%s: short read", path); return NULL;
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}
