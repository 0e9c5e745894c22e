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
        snprintf(cmd, sizeof cmd, "%s generate %s --prompt-ids %s --max-tokens %d --ignore-eos --temperature 0 2>/dev/null", bin(),
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
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "out of vocabulary"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 1 --max-tokens 100000 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "maximum context length"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 1 --bogus 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "--bogus"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 1 --cpu-isa sparc 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "sparc"));
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --prompt-ids 1 --cuda-matmul fp8 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "'fp8'") && strstr(out, "split or bf16"));
    snprintf(cmd, sizeof cmd, "%s frobnicate 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "unknown command"));
}

/* --cuda-matmul and --enforce-eager are CUDA settings: on the CPU device they
 * change nothing (the same greedy tokens with and without them) */
TEST(cuda_matmul_ignored_on_cpu) {
    char cmd[512], a[4096], b[4096];
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/qwen3_f32 --device cpu --prompt-ids 1,2,3 --max-tokens 6 2>/dev/null",
             bin());
    CHECK(run(cmd, a, sizeof a) == 0 && strlen(a) > 0);
    snprintf(cmd, sizeof cmd,
             "%s generate tests/fixtures/qwen3_f32 --device cpu --prompt-ids 1,2,3 --max-tokens 6 --cuda-matmul split "
             "--enforce-eager 2>/dev/null",
             bin());
    CHECK(run(cmd, b, sizeof b) == 0 && !strcmp(a, b));
}

/* --input JSONL through the engine: every line's greedy continuation equals
 * transformers', each line with its own max_tokens; one line's error names
 * the line. */
TEST(generate_jsonl_matches_transformers) {
    json_t *r = json_load_file("tests/fixtures/llama3_f32/reference.json", 0, NULL);
    REQUIRE(r);
    json_t *cases = json_object_get(r, "cases");
    const char *dir = test_mkdtemp();
    char in[300], outp[300], cmd[1024], out[4096];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    snprintf(outp, sizeof outp, "%s/out.jsonl", dir);
    FILE *f = fopen(in, "w");
    REQUIRE(f);
    int want_n[8];
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c), *mg = json_object_get(cs, "greedy_margin");
        int check = 0;
        while (check < (int)json_array_size(mg) && json_number_value(json_array_get(mg, check)) >= 1e-2) check++;
        want_n[c] = check ? check : 1;
        json_t *line = json_pack("{s:O,s:i,s:f,s:b}", "prompt_token_ids", json_object_get(cs, "prompt_ids"),
                                 "max_tokens", want_n[c], "temperature", 0.0, "ignore_eos", 1);
        char *t = json_dumps(line, JSON_COMPACT);
        fprintf(f, "%s\n", t);
        free(t);
        json_decref(line);
    }
    fclose(f);
    /* the same with async scheduling forced on (on the CPU only the order of
     * the engine's work changes) */
    for (int async = 0; async < 2; async++) {
        snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/llama3_f32 --input %s --output %s%s 2>&1", bin(), in, outp,
                 async ? " --async-scheduling" : "");
        CHECK(run(cmd, out, sizeof out) == 0);
        f = fopen(outp, "r");
        REQUIRE(f);
        char line[65536];
        size_t c = 0;
        while (fgets(line, sizeof line, f)) {
            json_t *o = json_loads(line, 0, NULL);
            REQUIRE(o && c < json_array_size(cases));
            CHECK(json_integer_value(json_object_get(o, "index")) == (json_int_t)c);
            json_t *seq = json_array_get(json_object_get(o, "outputs"), 0);
            json_t *ids = json_object_get(seq, "token_ids"), *g = json_object_get(json_array_get(cases, c), "greedy_ids");
            CHECK((int)json_array_size(ids) == want_n[c]);
            for (int i = 0; i < want_n[c] && i < (int)json_array_size(ids); i++)
                CHECK(json_integer_value(json_array_get(ids, i)) == json_integer_value(json_array_get(g, i)));
            CHECK(!strcmp(json_string_value(json_object_get(seq, "finish_reason")), "length"));
            json_decref(o);
            c++;
        }
        fclose(f);
        CHECK(c == json_array_size(cases));
    }
    json_decref(r);
    /* a bad line is named */
    f = fopen(in, "w");
    fprintf(f, "{\"prompt_token_ids\": [1, 2]}\n{\"prompt_token_ids\": [1], \"top_p\": 0}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s generate tests/fixtures/llama3_f32 --input %s 2>&1", bin(), in);
    CHECK(run(cmd, out, sizeof out) == 1 && strstr(out, "in.jsonl:2") && strstr(out, "top_p"));
}

TEST(bench_throughput_json) {
    const char *dir = test_mkdtemp();
    char js[300], cmd[1024], out[4096];
    snprintf(js, sizeof js, "%s/b.json", dir);
    snprintf(cmd, sizeof cmd,
             "%s bench throughput tests/fixtures/qwen3_f32 --num-prompts 12 --input-len 20 --output-len 9 "
             "--max-model-len 64 --output-json %s 2>&1", bin(), js);
    CHECK(run(cmd, out, sizeof out) == 0 && strstr(out, "Throughput:"));
    json_t *o = json_load_file(js, 0, NULL);
    REQUIRE(o);
    CHECK(json_integer_value(json_object_get(o, "num_requests")) == 12);
    CHECK(json_real_value(json_object_get(o, "total_num_tokens")) == 12 * (20 + 9));
    CHECK(json_real_value(json_object_get(o, "requests_per_second")) > 0);
    json_decref(o);
    /* sampled with top_k / top_p: every request still runs to its length; bad values are usage errors */
    snprintf(cmd, sizeof cmd,
             "%s bench throughput tests/fixtures/qwen3_f32 --num-prompts 5 --input-len 7 --output-len 4 "
             "--max-model-len 64 --top-k 3 --top-p 0.5 --output-json %s 2>&1", bin(), js);
    CHECK(run(cmd, out, sizeof out) == 0);
    o = json_load_file(js, 0, NULL);
    REQUIRE(o);
    CHECK(json_real_value(json_object_get(o, "total_num_tokens")) == 5 * (7 + 4));
    json_decref(o);
    snprintf(cmd, sizeof cmd, "%s bench throughput tests/fixtures/qwen3_f32 --top-p 0 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "--top-p"));
    snprintf(cmd, sizeof cmd, "%s bench throughput tests/fixtures/qwen3_f32 --top-k -1 2>&1", bin());
    CHECK(run(cmd, out, sizeof out) == 2 && strstr(out, "--top-k"));
}

TEST_MAIN()
