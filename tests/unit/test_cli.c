/* test_cli.c — the real binary as a user runs it: `vllmc generate` on a
 * fixture prints transformers' greedy continuation (up to the first near-tie),
 * and bad input exits non-zero with a message, never a crash. Needs
 * build/vllmc (VLLMC_BIN overrides; `make test` builds it first). */
#include <jansson.h>
#include <sys/wait.h>

#include "harness.h"

static const char *bin(void) {
    const char *b = getenv("VLLMC_BIN");
    if (b) return b;
    const char *dir = getenv("BUILD");
    static char p[256];
    snprintf(p, sizeof p, "%s/vllmc", dir ? dir : "build");
    return p;
}

/* Run a shell command; capture stdout+stderr into out; return the exit code
 * (or 128 + signal). */
static int run(const char *cmd, char *out, size_t cap) {
    FILE *f = popen(cmd, "r");
    REQUIRE(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

TEST(generate_matches_transformers_greedy) {
    const char *fx[] = { "tests/fixtures/qwen3_f32", "tests/fixtures/llama_bias_bf16", "tests/fixtures/gemma3_f32" };
    for (size_t f = 0; f < sizeof fx / sizeof fx[0]; f++) {
        char path[256];
        snprintf(path, sizeof path, "%s/reference.json", fx[f]);
        json_t *r = json_load_file(path, 0, NULL);
        REQUIRE(r);
        json_t *c = json_array_get(json_object_get(r, "cases"), 1);
        json_t *pr = json_object_get(c, "prompt_ids"), *g = json_object_get(c, "greedy_ids"),
               *mg = json_object_get(c, "greedy_margin");
        int check = 0; /* steps before the first near-tie */
        while (check < (int)json_array_size(g) && json_number_value(json_array_get(mg, check)) >= 1e-2) check++;
        REQUIRE(check > 0);
        char ids[1024] = "", cmd[2048], out[8192], want[1024] = "";
        for (size_t i = 0; i < json_array_size(pr); i++)
            snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%lld", i ? "," : "",
                     (long long)json_integer_value(json_array_get(pr, i)));
        for (int i = 0; i < check; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "",
                     (long long)json_integer_value(json_array_get(g, i)));
        snprintf(cmd, sizeof cmd, "%s generate %s --prompt-ids %s --max-tokens %d --ignore-eos 2>/dev/null", bin(),
                 fx[f], ids, check);
        CHECK(run(cmd, out, sizeof out) == 0);
        if (strncmp(out, want, strlen(want)) != 0 || (out[strlen(want)] != '\n'))
            fprintf(stderr, "  %s: got %s  want %s\n", fx[f], out, want);
        CHECK(strncmp(out, want, strlen(want)) == 0 && out[strlen(want)] == '\n');
        json_decref(r);
    }
}

TEST(generate_bad_input_fails_cleanly) {
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "HF_HOME=/nonexistent %s generate nobody/nothing --prompt-ids 1 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "not found") && strstr(out, "/nonexistent/hub"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 1,x 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "--prompt-ids"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 99999 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "out of range"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 1 --max-tokens 100000 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "max_model_len"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 1 --bogus 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "--bogus"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 1 --cpu-isa sparc 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "sparc"));
    snprintf(cmd, sizeof cmd, "%s frobnicate 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "unknown command"));
}

TEST_MAIN()
