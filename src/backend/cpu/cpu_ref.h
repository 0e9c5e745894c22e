/* cpu_ref.h — the portable C kernels of the CPU backend. They are the
 * reference every SIMD kernel is tested against (tests/unit/test_kernels.c),
 * and the fallback on CPUs without a SIMD path. Single-threaded over the
 * ranges they are given: the caller (cpu.c) partitions work across threads.
 * Straightforward loops, f32 accumulation (f64 nowhere: speed matters too). */
#ifndef VLLMC_CPU_REF_H
#define VLLMC_CPU_REF_H

#include "backend/backend.h"

/* y[t][n] for t < T, n in [n0, n1) */
void ref_matmul_rows(float *y, const float *x, const struct bk_weight *w, int T, int64_t n0, int64_t n1);
void ref_embed(float *out, const struct bk_weight *table, const int32_t *ids, int T, float scale);
void ref_rmsnorm(float *y, const float *x, const float *w, int R, int n, float eps);
void ref_rope(float *x, const int32_t *pos, int T, int H, int D, const struct bk_rope *r);
void ref_glu(float *out, const float *gate, const float *up, int T, int F, int ld, enum bk_act act);
void ref_kv_store(const struct bk_kv *kv, const float *k, const float *v, const int32_t *slots, int T);
/* attention for query rows [t0, t1) of sequence s; scratch holds >= seq_len[s] floats */
void ref_attention_rows(float *out, const float *q, const struct bk_kv *kv, const struct bk_attn_batch *b,
                        const struct bk_attn_params *p, int s, int t0, int t1, float *scratch);
float ref_act(float x, enum bk_act act);
/* cos/sin of one position for the SIMD rope kernels, times attn_factor:
 * neox: cs[i], sn[i] for i < rot_dim/2; interleaved: cs[2i] = cs[2i+1] = cos,
 * sn[2i] = -sin, sn[2i+1] = sin (sign folded so one loop shape fits both). */
void ref_rope_table(float *cs, float *sn, int32_t pos, const struct bk_rope *r);
/* backend.h sample_rows in plain C (sample_cpu.c; VLLMC_CPU_SAMPLE_ROWS=1) */
int cpu_sample_rows(struct backend *bk, const float *logits, int V, const struct bk_sample_req *req, int n,
                    struct bk_sample_res *res, int32_t *cand_id, float *cand_val, int n_slots, char *err,
                    size_t errlen);

#endif
