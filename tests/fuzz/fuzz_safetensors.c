/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser.
 * Feeds arbitrary bytes to st_parse_buffer; any crash, sanitizer report or
 * leak is a bug (the header is untrusted input). Build with `make fuzz`. */
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct st_set *s = NULL;
    char err[256];
    if (st_parse_buffer(&s, data, size, "fuzz.safetensors", err, sizeof err) == 0) {
        /* touch every tensor's bytes so an out-of-range pointer trips ASan */
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < st_count(s); i++) {
            const struct st_tensor *t = st_at(s, i);
            if (st_find(s, t->name) != t) __builtin_trap();
            for (size_t j = 0; j < t->nbytes; j++) sink ^= ((const uint8_t *)t->data)[j];
        }
        (void)sink;
    }
    st_close(s);
    return 0;
}
