/* stub.c — the CUDA backend's entry points in a build without CUDA (make
 * without CUDA=1): they report that the backend was not built, so callers
 * need no #ifdef. make CUDA=1 compiles cuda.c and kernels.cu instead of this
 * file. */
#include "backend/backend.h"

int backend_cuda_create(struct backend **out, int device, int n_threads, char *err, size_t errlen) {
    *out = NULL;
    return errf(err, errlen, "cuda backend: this build has no CUDA support (rebuild with make CUDA=1)");
}

int backend_cuda_create_mode(struct backend **out, int device, int n_threads, const char *matmul, char *err,
                             size_t errlen) {
    return backend_cuda_create(out, device, n_threads, err, errlen);
}

int backend_cuda_devices(void) { return 0; }

const char *backend_cuda_name(const struct backend *bk) { return "none"; }

const char *backend_cuda_matmul_mode(const struct backend *bk) { return "none"; }
long backend_cuda_fused_attention_calls(const struct backend *bk) { return 0; }
long backend_cuda_chain_ops(const struct backend *bk) { return -1; }
int backend_cuda_qbulk_pad(const struct backend *bk) { return 0; }
void backend_cuda_counts(const struct backend *bk, struct backend_cuda_counts *out) {
    *out = (struct backend_cuda_counts){ 0 };
}
