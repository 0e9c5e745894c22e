/* util.h — small shared helpers: error reporting into caller buffers, dtype
 * names and conversions (bf16/f16 <-> f32), monotonic time, checked allocation.
 *
 * Errors are values (STYLE.md 2): a function that can fail returns an int
 * (0 = ok, <0 = error) and writes a message into `char *err, size_t errlen`.
 * Nothing here calls exit() or abort() on bad input. */
#ifndef VLLMC_UTIL_H
#define VLLMC_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Write a formatted message into err (if non-NULL) and return -1. */
int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Logging to stderr; level 0 = info, 1 = warn, 2 = error. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_info(...) log_msg(0, __VA_ARGS__)
#define log_warn(...) log_msg(1, __VA_ARGS__)
#define log_error(...) log_msg(2, __VA_ARGS__)

double time_now(void); /* seconds, monotonic */

/* Storage types of tensors, as named by safetensors. */
enum dtype {
    DT_F32 = 0, DT_F16, DT_BF16, DT_F64,
    DT_I8, DT_I16, DT_I32, DT_I64,
    DT_U8, DT_U16, DT_U32, DT_U64,
    DT_BOOL, DT_F8_E4M3, DT_F8_E5M2, DT_F8_E8M0,
    DT_COUNT
};
const char *dtype_name(enum dtype t);            /* "BF16" ... */
int dtype_from_name(const char *s, enum dtype *out); /* 0 ok, -1 unknown */
size_t dtype_size(enum dtype t);                 /* bytes per element */

static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { .u = (uint32_t)h << 16 };
    return v.f;
}
static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, NaN kept */
    union { uint32_t u; float f; } v = { .f = f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    v.u += 0x7fffu + ((v.u >> 16) & 1);
    return (uint16_t)(v.u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* Read element i of a 1-D buffer of a float dtype as f32. */
float dtype_read_f32(const void *p, enum dtype t, size_t i);

void *xmalloc(size_t n);          /* aborts only on out-of-memory */
void *xcalloc(size_t n, size_t m);
char *xstrdup(const char *s);

/* Read a whole file; returns malloc'd NUL-terminated buffer or NULL (err set). */
char *file_read_all(const char *path, size_t *len, char *err, size_t errlen);

#endif
