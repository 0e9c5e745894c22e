/* detok.h — id -> text from tokenizer.json's vocabulary (see detok.c). */
#ifndef VLLMC_DETOK_H
#define VLLMC_DETOK_H

#include <stddef.h>

#include "util/util.h"

struct detok;
int detok_load(struct detok **out, const char *dir, char *err, size_t errlen);
void detok_free(struct detok *d);
/* Bytes of token id appended to buf (at most cap); returns the count. */
size_t detok_piece(const struct detok *d, int id, char *buf, size_t cap);

#endif
