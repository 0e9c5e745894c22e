/* safetensors.h — read-only access to safetensors checkpoints through mmap.
 *
 * Owns: the mappings of one checkpoint's files and the parsed tensor index
 * (name -> dtype, shape, pointer into the mapping). Single file
 * (model.safetensors) or sharded (model.safetensors.index.json naming the
 * shard of each tensor).
 *
 * The header is untrusted input. Parsing validates everything before any
 * tensor pointer is handed out: header length within the file, valid JSON
 * object, known dtype, shape * element size == byte count, offsets in range
 * and not overlapping, no duplicate names (within a file or across shards),
 * and an index whose every tensor is found in the shard it names. A failure
 * returns -1 with a message naming the file and, where there is one, the
 * tensor. Never a crash or an out-of-bounds read (tests/fuzz).
 *
 * Does not: convert dtypes, interpret names, or know about models. */
#ifndef VLLMC_SAFETENSORS_H
#define VLLMC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define ST_MAX_DIMS 8

struct st_tensor {
    const char *name;
    enum dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;   /* into the mmapped file; valid until st_close */
    size_t nbytes;
    const char *file;   /* path of the file that holds it */
};

struct st_set; /* opaque */

/* Open a checkpoint directory: model.safetensors.index.json if present, else
 * model.safetensors, else every *.safetensors in the directory (sorted). */
int st_open_dir(struct st_set **out, const char *dir, char *err, size_t errlen);
/* Open exactly one .safetensors file. */
int st_open_file(struct st_set **out, const char *path, char *err, size_t errlen);
void st_close(struct st_set *s);

const struct st_tensor *st_find(const struct st_set *s, const char *name); /* NULL if absent */
size_t st_count(const struct st_set *s);
const struct st_tensor *st_at(const struct st_set *s, size_t i);
/* Total bytes of tensor data across all files (for progress/size reports). */
size_t st_total_bytes(const struct st_set *s);

/* Parse one in-memory safetensors image (8-byte length, JSON header, data).
 * `fname` is used in messages. On success the tensors point into buf. This is
 * what st_open_file uses after mmap, and what the fuzz target drives. */
int st_parse_buffer(struct st_set **out, const uint8_t *buf, size_t len, const char *fname, char *err,
                    size_t errlen);

/* Load progress: done of total bytes of the mapped files read so far. */
typedef void (*st_progress_fn)(void *arg, size_t done, size_t total);
/* The process-wide reporter st_prefault calls (cb NULL: silent). The default
 * writes to stderr for checkpoints of 256 MiB or more: a bar on a terminal,
 * otherwise a line every 5 s and one at the end. Set it before loading. */
void st_set_progress(st_progress_fn cb, void *arg);
/* Read every mapped file once, in order: madvise(MADV_WILLNEED) one 64 MiB
 * window ahead, then one load per page of the current window, reporting
 * progress after each (and once with done 0 first). Afterwards the weights
 * are in the page cache, so the first request does not stall on faults. */
void st_prefault(const struct st_set *s);

/* Writing (used by tests and the benchmark to make checkpoints locally). */
struct st_write_tensor {
    const char *name;
    enum dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
};
int st_write_file(const char *path, const struct st_write_tensor *t, size_t n, char *err, size_t errlen);

#endif
