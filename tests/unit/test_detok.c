/* test_detok.c — the vocab decoder inverts GPT-2's byte-level map and
 * SentencePiece's "▁" / <0xNN> conventions (the published definitions). */
#include <stdlib.h>
#include <sys/stat.h>

#include "harness.h"
#include "text/detok.h"

static const char *write_tok(const char *json) { return test_write_tmp("tokenizer.json", json); }

TEST(byte_level_pieces) {
    /* "Ġ" (U+0120) is the space byte 0x20, "Ċ" (U+010A) is "\n", "Ã©" is the two
     * bytes of "é" in UTF-8 (0xC3 0xA9 map to themselves). */
    const char *dir = write_tok("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u0120hello\": 0, \"\\u010a\": 1, "
                                "\"\\u00c3\\u00a9\": 2, \"x\": 3}}, \"decoder\": {\"type\": \"ByteLevel\"}, "
                                "\"added_tokens\": [{\"id\": 4, \"content\": \"<|im_end|>\"}]}");
    struct detok *d;
    char err[256], buf[64];
    REQUIRE(detok_load(&d, dir, err, sizeof err) == 0);
    size_t n = detok_piece(d, 0, buf, sizeof buf);
    CHECK(n == 6 && !memcmp(buf, " hello", 6));
    CHECK(detok_piece(d, 1, buf, sizeof buf) == 1 && buf[0] == '\n');
    CHECK(detok_piece(d, 2, buf, sizeof buf) == 2 && !memcmp(buf, "\xc3\xa9", 2));
    n = detok_piece(d, 4, buf, sizeof buf);
    CHECK(n == 10 && !memcmp(buf, "<|im_end|>", 10));
    CHECK(detok_piece(d, 99, buf, sizeof buf) == 0);
    detok_free(d);
}

TEST(sentencepiece_pieces) {
    const char *dir = write_tok("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": "
                                "{\"\\u2581hi\": 0, \"<0x41>\": 1, \"there\": 2}}, \"decoder\": {\"type\": "
                                "\"Sequence\", \"decoders\": [{\"type\": \"Replace\"}, {\"type\": \"ByteFallback\"}]}}");
    struct detok *d;
    char err[256], buf[64];
    REQUIRE(detok_load(&d, dir, err, sizeof err) == 0);
    CHECK(detok_piece(d, 0, buf, sizeof buf) == 3 && !memcmp(buf, " hi", 3));
    CHECK(detok_piece(d, 1, buf, sizeof buf) == 1 && buf[0] == 'A');
    CHECK(detok_piece(d, 2, buf, sizeof buf) == 5 && !memcmp(buf, "there", 5));
    detok_free(d);
}

TEST(missing_or_bad_tokenizer_is_an_error) {
    struct detok *d;
    char err[256];
    CHECK(detok_load(&d, "/nonexistent", err, sizeof err) != 0 && strstr(err, "tokenizer.json"));
    CHECK(detok_load(&d, write_tok("{\"model\": {}}"), err, sizeof err) != 0 && strstr(err, "vocabulary"));
    CHECK(detok_load(&d, write_tok("{oops"), err, sizeof err) != 0);
}

TEST_MAIN()
