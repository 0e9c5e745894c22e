/* quant.h — quantized checkpoint formats: the quantization config of
 * config.json (MLX affine with per-module overrides, AWQ), the preflight that
 * rejects what we cannot run before any model state is built, and the binding
 * of one quantized Linear/Embedding to a struct bk_weight in the backend's
 * affine form (DESIGN.md §6).
 *
 * MLX affine (mlx-community): "quantization" and/or "quantization_config" =
 * {"group_size": 32|64|128, "bits": 2|3|4|5|6|8, "mode": "affine", and
 * per-module overrides keyed by module path: {"bits", "group_size"} or false}.
 * A quantized module has weight U32 [out, in*bits/32] (rows are little-endian
 * bit streams of codes), scales and biases [out, in/group] in BF16/F16/F32;
 * w = scale*q + bias. These are bound in place (the mmapped bytes are the
 * backend's format), after strict shape and dtype checks.
 *
 * AWQ (AutoAWQ "GEMM"): quantization_config.quant_method "awq"; qweight I32
 * [in, out/8] and qzeros I32 [in/group, out/8] pack eight 4-bit values in
 * the order 0,2,4,6,1,3,5,7; scales F16 [in/group, out]; w = (q - z)*s. These
 * are repacked at load into the affine form (codes per output row, f32 scales
 * and biases = -z*s, both exact) in memory the caller owns.
 *
 * Whether a module is quantized is decided by its tensors (MLX: a .scales
 * beside .weight; AWQ: .qweight), as mlx-lm and AutoAWQ do; the config gives
 * bits and group size and may mark a module `false` (not quantized).
 *
 * Does not: quantize anything, know model layer structure, or compute. */
#ifndef VLLMC_IO_QUANT_H
#define VLLMC_IO_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "io/safetensors.h"

enum quant_method { QUANT_NONE = 0, QUANT_MLX, QUANT_AWQ };

struct quant_override {
    char *module;       /* module path as in the checkpoint, e.g. "model.layers.0.mlp.down_proj" */
    bool quantized;     /* false: the config says `false` for it */
    int bits, group_size;
};

struct quant_cfg {
    enum quant_method method;
    int bits, group_size;            /* defaults (AWQ: always 4 and 128) */
    struct quant_override *ov;       /* MLX per-module overrides */
    int n_ov;
};

/* Parse the quantization part of a config.json text and run the preflight:
 * no quantization keys -> method QUANT_NONE. Errors (returned -1 with a
 * message): unsupported quant_method (GPTQ, ...), AWQ with a version other
 * than GEMM, bits != 4, group size != 128 or zero_point false; MLX with a
 * mode other than affine or bits/group sizes MLX does not produce. On error
 * *q is left empty (nothing to free). */
int quant_cfg_parse(struct quant_cfg *q, const char *json_text, size_t len, char *err, size_t errlen);
/* quant_cfg_parse of DIR/config.json. */
int quant_cfg_load(struct quant_cfg *q, const char *dir, char *err, size_t errlen);
void quant_cfg_free(struct quant_cfg *q);

/* Bits and group size of a module under an MLX config (its override, else
 * the defaults). Returns false when the config marks the module `false`. */
bool quant_module_params(const struct quant_cfg *q, const char *module, int *bits, int *group_size);

/* Bind MLX module `module` (full path without ".weight") of shape
 * [rows, cols] from its weight/scales/biases tensors. 0, or -1 with a message
 * naming the tensor and its file (wrong dtype or shape, cols not a multiple
 * of the group, missing scales or biases). */
int quant_bind_mlx(const struct st_set *st, const char *module, int64_t rows, int64_t cols, int bits,
                   int group_size, struct bk_weight *w, char *err, size_t errlen);

/* Bytes of memory quant_bind_awq needs for a [rows, cols] module. */
size_t quant_awq_bytes(int64_t rows, int64_t cols, int group_size);
/* Check and repack AWQ module `module` (qweight/qzeros/scales) of logical
 * shape [rows=out, cols=in] into mem (quant_awq_bytes, 4-byte aligned, owned
 * by the caller for as long as w is used) and describe it in w (BK_W_AFFINE,
 * 4 bits, F32 scales/biases). 0, or -1 with a message naming the tensor. */
int quant_bind_awq(const struct st_set *st, const char *module, int64_t rows, int64_t cols, int group_size,
                   void *mem, struct bk_weight *w, char *err, size_t errlen);

#endif
