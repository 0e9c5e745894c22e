/* safetensors.c — mmap-based safetensors reader (and a small writer).
 *
 * Owns: one read-only mapping per file, the tensor table, the tensor name
 * strings, and an open-addressing hash (name -> table index) so st_find is
 * O(1) on checkpoints with thousands of tensors.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON, then the
 * data section. Each tensor's data_offsets are relative to the start of the
 * data section (8 + N). Nothing guarantees 8 + N + begin is aligned for the
 * element type (writers pad N to a multiple of 8 but tensor offsets are
 * arbitrary), so st_tensor.data may be unaligned: consumers read it with
 * memcpy or convert it into their own buffers, never by casting to float *.
 *
 * st_prefault reads the mappings once, in order, before the model runs, and
 * reports progress through a process-wide callback (st_set_progress; by
 * default a bar or periodic lines on stderr for checkpoints >= 256 MiB).
 *
 * Every byte of the header is untrusted; all checks happen before a tensor is
 * visible through st_find. Does not: convert dtypes, interpret tensor names,
 * verify the data bytes themselves. */
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20) /* real headers are < 1 MB; bigger is garbage */

struct st_file {
    char *path;
    void *map;      /* NULL for st_parse_buffer (buffer owned by the caller) */
    size_t maplen;
};

struct st_set {
    struct st_tensor *t; /* [n]; names are malloc'd and owned here */
    size_t n, cap;
    uint32_t *slot;      /* [hcap] table index + 1, 0 = empty; hcap a power of two */
    size_t hcap;
    struct st_file *files;
    size_t nfiles;
    size_t total_bytes;
};

/* ---- hash table ---------------------------------------------------------- */

static uint64_t st_hash(const char *s) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void st_hash_put(struct st_set *s, size_t idx) {
    size_t mask = s->hcap - 1, i = (size_t)st_hash(s->t[idx].name) & mask;
    while (s->slot[i]) i = (i + 1) & mask;
    s->slot[i] = (uint32_t)(idx + 1);
}

/* Keep load <= 1/2 so probes stay short. */
static void st_hash_grow(struct st_set *s, size_t want) {
    if (want * 2 <= s->hcap) return;
    size_t cap = s->hcap ? s->hcap : 64;
    while (want * 2 > cap) cap *= 2;
    free(s->slot);
    s->slot = xcalloc(cap, sizeof *s->slot);
    s->hcap = cap;
    for (size_t i = 0; i < s->n; i++) st_hash_put(s, i);
}

const struct st_tensor *st_find(const struct st_set *s, const char *name) {
    if (!s || !s->hcap || !name) return NULL;
    size_t mask = s->hcap - 1, i = (size_t)st_hash(name) & mask;
    for (; s->slot[i]; i = (i + 1) & mask) {
        const struct st_tensor *t = &s->t[s->slot[i] - 1];
        if (strcmp(t->name, name) == 0) return t;
    }
    return NULL;
}

size_t st_count(const struct st_set *s) { return s ? s->n : 0; }
const struct st_tensor *st_at(const struct st_set *s, size_t i) { return s && i < s->n ? &s->t[i] : NULL; }
size_t st_total_bytes(const struct st_set *s) { return s ? s->total_bytes : 0; }

static struct st_set *st_new(void) { return xcalloc(1, sizeof(struct st_set)); }

void st_close(struct st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free((char *)s->t[i].name);
    for (size_t i = 0; i < s->nfiles; i++) {
        if (s->files[i].map) munmap(s->files[i].map, s->files[i].maplen);
        free(s->files[i].path);
    }
    free(s->files);
    free(s->t);
    free(s->slot);
    free(s);
}

static size_t st_add_file(struct st_set *s, const char *path, void *map, size_t maplen) {
    s->files = realloc(s->files, (s->nfiles + 1) * sizeof *s->files);
    if (!s->files) { fprintf(stderr, "vllmc: out of memory\n"); abort(); }
    s->files[s->nfiles] = (struct st_file){ xstrdup(path), map, maplen };
    return s->nfiles++;
}

/* ---- header parsing ------------------------------------------------------ */

struct st_range { uint64_t begin, end; size_t idx; };

static int st_range_cmp(const void *a, const void *b) {
    const struct st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Validate one header entry and fill *t (name not set). */
static int st_parse_entry(struct st_tensor *t, uint64_t *begin, uint64_t *end, const char *name, json_t *v,
                          uint64_t data_len, const char *fname, char *err, size_t errlen) {
    if (!json_is_object(v)) return errf(err, errlen, "%s: tensor '%s': entry is not a JSON object", fname, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd)) return errf(err, errlen, "%s: tensor '%s': missing or non-string dtype", fname, name);
    if (dtype_from_name(json_string_value(jd), &t->dtype) != 0)
        return errf(err, errlen, "%s: tensor '%s': unknown dtype '%s'", fname, name, json_string_value(jd));
    if (!json_is_array(js)) return errf(err, errlen, "%s: tensor '%s': missing or non-array shape", fname, name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return errf(err, errlen, "%s: tensor '%s': shape has %zu dims (at most %d)", fname, name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t count = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return errf(err, errlen, "%s: tensor '%s': shape[%zu] is not a non-negative integer", fname, name, i);
        t->shape[i] = (int64_t)json_integer_value(d);
        uint64_t dim = (uint64_t)t->shape[i];
        if (dim && count > UINT64_MAX / dim) overflow = true;
        else count *= dim;
    }
    /* A zero dim makes the product 0 regardless of earlier overflow. */
    for (size_t i = 0; i < nd; i++) if (t->shape[i] == 0) { overflow = false; count = 0; }
    uint64_t esz = dtype_size(t->dtype);
    if (overflow || count > UINT64_MAX / esz)
        return errf(err, errlen, "%s: tensor '%s': shape element count overflows", fname, name);
    uint64_t nbytes = count * esz;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return errf(err, errlen, "%s: tensor '%s': data_offsets must be [begin, end] integers", fname, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < b)
        return errf(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld] invalid", fname, name, (long long)b,
                    (long long)e);
    if ((uint64_t)e > data_len)
        return errf(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld] past the end of the data (%llu bytes)",
                    fname, name, (long long)b, (long long)e, (unsigned long long)data_len);
    if ((uint64_t)(e - b) != nbytes)
        return errf(err, errlen, "%s: tensor '%s': %llu bytes in data_offsets but shape x %s needs %llu", fname,
                    name, (unsigned long long)(e - b), dtype_name(t->dtype), (unsigned long long)nbytes);
    *begin = (uint64_t)b;
    *end = (uint64_t)e;
    t->nbytes = (size_t)nbytes;
    return 0;
}

/* Parse one image and append its tensors to s. On failure s may hold some of
 * this file's tensors; the caller closes the whole set. */
static int st_parse_into(struct st_set *s, size_t file_idx, const uint8_t *buf, size_t len, char *err,
                         size_t errlen) {
    const char *fname = s->files[file_idx].path;
    if (len < 8) return errf(err, errlen, "%s: file too short (%zu bytes) for a safetensors header", fname, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen == 0) return errf(err, errlen, "%s: header length is 0", fname);
    if (hlen > len - 8)
        return errf(err, errlen, "%s: header length %llu past the end of the file (%zu bytes)", fname,
                    (unsigned long long)hlen, len);
    if (hlen > ST_MAX_HEADER)
        return errf(err, errlen, "%s: header length %llu is implausibly large", fname, (unsigned long long)hlen);
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return errf(err, errlen, "%s: header is not valid JSON: %s (at byte %d)", fname, jerr.text, jerr.position);
    int rc = -1;
    struct st_range *ranges = NULL;
    if (!json_is_object(root)) { errf(err, errlen, "%s: header is not a JSON object", fname); goto out; }

    size_t nobj = json_object_size(root);
    if (s->n + nobj > UINT32_MAX - 1) { errf(err, errlen, "%s: too many tensors", fname); goto out; }
    if (s->n + nobj > s->cap) {
        s->cap = s->n + nobj;
        s->t = realloc(s->t, s->cap * sizeof *s->t);
        if (!s->t) { fprintf(stderr, "vllmc: out of memory\n"); abort(); }
    }
    st_hash_grow(s, s->n + nobj);
    ranges = xmalloc(nobj * sizeof *ranges);
    size_t nr = 0;

    const char *name;
    json_t *v;
    json_object_foreach(root, name, v) {
        if (strcmp(name, "__metadata__") == 0) {
            const char *k;
            json_t *mv;
            if (!json_is_object(v)) { errf(err, errlen, "%s: __metadata__ is not an object", fname); goto out; }
            json_object_foreach(v, k, mv) if (!json_is_string(mv)) {
                errf(err, errlen, "%s: __metadata__ '%s' is not a string", fname, k);
                goto out;
            }
            continue;
        }
        const struct st_tensor *dup = st_find(s, name);
        if (dup) {
            errf(err, errlen, "%s: tensor '%s' is also in %s", fname, name, dup->file);
            goto out;
        }
        struct st_tensor t = { 0 };
        uint64_t b = 0, e = 0;
        if (st_parse_entry(&t, &b, &e, name, v, data_len, fname, err, errlen) != 0) goto out;
        t.name = xstrdup(name);
        t.file = fname;
        t.data = data + b;
        s->t[s->n] = t;
        st_hash_put(s, s->n);
        s->total_bytes += t.nbytes;
        ranges[nr++] = (struct st_range){ b, e, s->n };
        s->n++;
    }

    /* Overlap check: sorted by begin, each non-empty range must start at or
     * after the previous non-empty one's end. Empty ranges hold no bytes. */
    qsort(ranges, nr, sizeof *ranges, st_range_cmp);
    const struct st_range *prev = NULL;
    for (size_t i = 0; i < nr; i++) {
        if (ranges[i].begin == ranges[i].end) continue;
        if (prev && ranges[i].begin < prev->end) {
            errf(err, errlen, "%s: tensor '%s' [%llu, %llu] overlaps tensor '%s' [%llu, %llu]", fname,
                 s->t[ranges[i].idx].name, (unsigned long long)ranges[i].begin, (unsigned long long)ranges[i].end,
                 s->t[prev->idx].name, (unsigned long long)prev->begin, (unsigned long long)prev->end);
            goto out;
        }
        prev = &ranges[i];
    }
    rc = 0;
out:
    free(ranges);
    json_decref(root);
    return rc;
}

int st_parse_buffer(struct st_set **out, const uint8_t *buf, size_t len, const char *fname, char *err,
                    size_t errlen) {
    *out = NULL;
    struct st_set *s = st_new();
    size_t fi = st_add_file(s, fname ? fname : "(buffer)", NULL, 0);
    if (st_parse_into(s, fi, buf, len, err, errlen) != 0) { st_close(s); return -1; }
    *out = s;
    return 0;
}

/* Map `path` and append its tensors to s. */
static int st_load_file(struct st_set *s, const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errf(err, errlen, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) { close(fd); return errf(err, errlen, "%s: not a regular file", path); }
    size_t len = (size_t)sb.st_size;
    if (len < 8) { close(fd); return errf(err, errlen, "%s: file too short (%zu bytes) for a safetensors header", path, len); }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return errf(err, errlen, "%s: mmap: %s", path, strerror(e));
    size_t fi = st_add_file(s, path, map, len);
    return st_parse_into(s, fi, map, len, err, errlen);
}

/* ---- prefault with progress ------------------------------------------------ */

#define ST_PREFAULT_WINDOW ((size_t)64 << 20)
#define ST_PROGRESS_MIN ((size_t)256 << 20)

static double st_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* stderr: a bar on a terminal, else a line every 5 s; silent under 256 MiB */
static void st_progress_default(void *arg, size_t done, size_t total) {
    static double t0, t_last;
    static int tty, last_pct;
    (void)arg;
    if (total < ST_PROGRESS_MIN) return;
    double now = st_now();
    double gb = 1e-9 * (double)total;
    if (done == 0) {
        t0 = t_last = now;
        tty = isatty(2);
        last_pct = -1;
        if (!tty) fprintf(stderr, "vllmc: loading weights: %.2f GB\n", gb);
        return;
    }
    int pct = (int)(100.0 * (double)done / (double)total);
    if (tty) {
        if (pct == last_pct && done < total) return;
        last_pct = pct;
        int fill = pct * 30 / 100;
        fprintf(stderr, "\rvllmc: loading weights [%.*s%*s] %3d%% %.2f/%.2f GB", fill,
                "##############################", 30 - fill, "", pct, 1e-9 * (double)done, gb);
        if (done >= total) fprintf(stderr, " in %.1f s\n", now - t0);
    } else if (done >= total) {
        fprintf(stderr, "vllmc: loaded weights: %.2f GB in %.1f s\n", gb, now - t0);
    } else if (now - t_last >= 5.0) {
        t_last = now;
        fprintf(stderr, "vllmc: loading weights: %d%% (%.2f of %.2f GB)\n", pct, 1e-9 * (double)done, gb);
    }
}

static st_progress_fn st_progress_cb = st_progress_default;
static void *st_progress_arg;

void st_set_progress(st_progress_fn cb, void *arg) {
    st_progress_cb = cb;
    st_progress_arg = arg;
}

void st_prefault(const struct st_set *s) {
    if (!s) return;
    size_t total = 0, done = 0;
    for (size_t i = 0; i < s->nfiles; i++)
        if (s->files[i].map) total += s->files[i].maplen;
    st_progress_fn cb = st_progress_cb;
    void *arg = st_progress_arg;
    if (cb) cb(arg, 0, total);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (page == 0 || page > ST_PREFAULT_WINDOW) page = 4096;
    for (size_t i = 0; i < s->nfiles; i++) {
        const uint8_t *p = s->files[i].map;
        size_t len = s->files[i].maplen;
        if (!p) continue;
        madvise((void *)p, MIN(len, ST_PREFAULT_WINDOW), MADV_WILLNEED);
        for (size_t off = 0; off < len; off += ST_PREFAULT_WINDOW) {
            size_t n = MIN(ST_PREFAULT_WINDOW, len - off);
            if (off + n < len) /* read-ahead of the next window while this one is touched */
                madvise((void *)(p + off + n), MIN(ST_PREFAULT_WINDOW, len - off - n), MADV_WILLNEED);
            unsigned sink = 0;
            for (size_t q = 0; q < n; q += page) sink += ((const volatile uint8_t *)p)[off + q];
            (void)sink;
            done += n;
            if (cb) cb(arg, done, total);
        }
    }
}

int st_open_file(struct st_set **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    struct st_set *s = st_new();
    if (st_load_file(s, path, err, errlen) != 0) { st_close(s); return -1; }
    *out = s;
    return 0;
}

/* ---- directories --------------------------------------------------------- */

static int st_strcmp_p(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *st_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool st_is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Load the shards named by the index, then check every mapping. */
static int st_load_index(struct st_set *s, const char *dir, const char *ipath, char *err, size_t errlen) {
    size_t len;
    char *text = file_read_all(ipath, &len, err, errlen);
    if (!text) return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return errf(err, errlen, "%s: not valid JSON: %s (line %d)", ipath, jerr.text, jerr.line);
    int rc = -1;
    char **shards = NULL;
    size_t nsh = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        errf(err, errlen, "%s: missing or empty \"weight_map\" object", ipath);
        goto out;
    }
    shards = xmalloc(json_object_size(wm) * sizeof *shards);
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        const char *f = json_string_value(v);
        if (!f) { errf(err, errlen, "%s: tensor '%s': shard is not a string", ipath, name); goto out; }
        /* Shards live beside the index; refuse paths that could leave it. */
        if (!*f || strchr(f, '/') || strcmp(f, ".") == 0 || strcmp(f, "..") == 0) {
            errf(err, errlen, "%s: tensor '%s': bad shard file name '%s'", ipath, name, f);
            goto out;
        }
        shards[nsh++] = (char *)f;
    }
    qsort(shards, nsh, sizeof *shards, st_strcmp_p);
    for (size_t i = 0; i < nsh; i++) {
        if (i && strcmp(shards[i], shards[i - 1]) == 0) continue;
        char *p = st_join(dir, shards[i]);
        int r = st_load_file(s, p, err, errlen);
        free(p);
        if (r != 0) goto out;
    }
    json_object_foreach(wm, name, v) {
        const struct st_tensor *t = st_find(s, name);
        const char *f = json_string_value(v);
        if (!t) {
            errf(err, errlen, "%s: tensor '%s' is mapped to %s/%s, which does not contain it", ipath, name, dir, f);
            goto out;
        }
        const char *base = strrchr(t->file, '/');
        base = base ? base + 1 : t->file;
        if (strcmp(base, f) != 0) {
            errf(err, errlen, "%s: tensor '%s' is mapped to %s but found in %s", ipath, name, f, t->file);
            goto out;
        }
    }
    rc = 0;
out:
    free(shards);
    json_decref(root);
    return rc;
}

int st_open_dir(struct st_set **out, const char *dir, char *err, size_t errlen) {
    *out = NULL;
    struct st_set *s = st_new();
    int rc = -1;
    char *p = st_join(dir, "model.safetensors.index.json");
    if (st_is_file(p)) {
        rc = st_load_index(s, dir, p, err, errlen);
        goto out;
    }
    free(p);
    p = st_join(dir, "model.safetensors");
    if (st_is_file(p)) {
        rc = st_load_file(s, p, err, errlen);
        goto out;
    }
    DIR *d = opendir(dir);
    if (!d) { errf(err, errlen, "%s: %s", dir, strerror(errno)); goto out; }
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l <= 12 || strcmp(de->d_name + l - 12, ".safetensors") != 0) continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 16;
            names = realloc(names, cap * sizeof *names);
            if (!names) { fprintf(stderr, "vllmc: out of memory\n"); abort(); }
        }
        names[nn++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (nn == 0) {
        errf(err, errlen, "%s: no model.safetensors.index.json, model.safetensors or *.safetensors file", dir);
    } else {
        qsort(names, nn, sizeof *names, st_strcmp_p);
        rc = 0;
        for (size_t i = 0; i < nn && rc == 0; i++) {
            char *fp = st_join(dir, names[i]);
            rc = st_load_file(s, fp, err, errlen);
            free(fp);
        }
    }
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names);
out:
    free(p);
    if (rc != 0) { st_close(s); return -1; }
    *out = s;
    return 0;
}

/* ---- writing ------------------------------------------------------------- */

int st_write_file(const char *path, const struct st_write_tensor *t, size_t n, char *err, size_t errlen) {
    json_t *root = json_object();
    uint64_t off = 0;
    size_t *nb = xmalloc(n * sizeof *nb);
    char *hdr = NULL;
    FILE *f = NULL;
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)t[i].dtype >= DT_COUNT || t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS) {
            errf(err, errlen, "%s: tensor '%s': bad dtype or ndim", path, t[i].name);
            goto out;
        }
        if (json_object_get(root, t[i].name) || strcmp(t[i].name, "__metadata__") == 0) {
            errf(err, errlen, "%s: tensor '%s': duplicate or reserved name", path, t[i].name);
            goto out;
        }
        json_t *shape = json_array();
        uint64_t count = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            json_array_append_new(shape, json_integer(t[i].shape[d]));
            count *= (uint64_t)t[i].shape[d];
        }
        nb[i] = (size_t)(count * dtype_size(t[i].dtype));
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(dtype_name(t[i].dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + nb[i])));
        json_object_set_new(root, t[i].name, e);
        off += nb[i];
    }
    hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hdr) { errf(err, errlen, "%s: cannot encode header", path); goto out; }
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7; /* spaces keep the data section 8-aligned */
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    f = fopen(path, "wb");
    if (!f) { errf(err, errlen, "%s: %s", path, strerror(errno)); goto out; }
    bool ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(hdr, 1, hl, f) == hl;
    for (size_t i = hl; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < n; i++) ok = nb[i] == 0 || fwrite(t[i].data, 1, nb[i], f) == nb[i];
    int cerr = fclose(f);
    f = NULL;
    if (!ok || cerr != 0) { errf(err, errlen, "%s: write failed: %s", path, strerror(errno)); goto out; }
    rc = 0;
out:
    free(hdr);
    free(nb);
    json_decref(root);
    return rc;
}
