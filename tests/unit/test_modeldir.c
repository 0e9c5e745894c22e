/* test_modeldir.c — modeldir_resolve against a fake Hugging Face cache built
 * in a mkdtemp dir (HF_HOME / HF_HUB_CACHE / HOME pointed at it). */
#include "harness.h"
#include "io/modeldir.h"
#include "util/util.h"

#include <sys/stat.h>
#include <sys/time.h>

static char root_[256];

static const char *root(void) {
    if (!root_[0]) {
        snprintf(root_, sizeof root_, "/tmp/vllmc_md_XXXXXX");
        REQUIRE(mkdtemp(root_));
    }
    return root_;
}

static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", dir);
    root_[0] = 0; /* the next tmp dir is a fresh one */
}

/* mkdir -p of root()/rel */
static void mkdirs(const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root(), rel);
    for (char *s = p + strlen(root()) + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    mkdir(p, 0755);
}

static void put(const char *rel, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root(), rel);
    FILE *f = fopen(p, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
}

static void set_mtime(const char *rel, long sec) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root(), rel);
    struct timeval tv[2] = { { sec, 0 }, { sec, 0 } };
    REQUIRE(utimes(p, tv) == 0);
}

static void use_hf_home(void) {
    char p[512];
    snprintf(p, sizeof p, "%s/hf", root());
    unsetenv("HF_HUB_CACHE");
    setenv("HF_HOME", p, 1);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

TEST(local_dir_wins) {
    mkdirs("local/model");
    char arg[512], out[1024], err[512] = "";
    snprintf(arg, sizeof arg, "%s/local/model", root());
    CHECK(modeldir_resolve(arg, out, sizeof out, err, sizeof err) == 0);
    CHECK(strcmp(out, arg) == 0);
    /* an existing relative dir shaped like ORG/NAME is used as is, not looked up */
    use_hf_home();
    REQUIRE(chdir(root()) == 0);
    CHECK(modeldir_resolve("local/model", out, sizeof out, err, sizeof err) == 0);
    CHECK(strcmp(out, "local/model") == 0);
    /* a file is not a model directory */
    put("local/file", "x");
    snprintf(arg, sizeof arg, "%s/local/file", root());
    CHECK(modeldir_resolve(arg, out, sizeof out, err, sizeof err) == -1);
    CHECK(strstr(err, "local/file") != NULL);
    rm_rf(root());
}

TEST(refs_main) {
    use_hf_home();
    mkdirs("hf/hub/models--Qwen--Qwen3-0.6B/snapshots/aaa111");
    mkdirs("hf/hub/models--Qwen--Qwen3-0.6B/snapshots/bbb222");
    mkdirs("hf/hub/models--Qwen--Qwen3-0.6B/refs");
    put("hf/hub/models--Qwen--Qwen3-0.6B/refs/main", "aaa111\n");
    set_mtime("hf/hub/models--Qwen--Qwen3-0.6B/snapshots/aaa111", 1000);
    set_mtime("hf/hub/models--Qwen--Qwen3-0.6B/snapshots/bbb222", 2000); /* newer, but refs/main wins */
    char out[1024], err[512] = "";
    int rc = modeldir_resolve("Qwen/Qwen3-0.6B", out, sizeof out, err, sizeof err);
    if (rc) fprintf(stderr, "  %s\n", err);
    CHECK(rc == 0);
    CHECK(ends_with(out, "/hf/hub/models--Qwen--Qwen3-0.6B/snapshots/aaa111"));
    CHECK(strncmp(out, root(), strlen(root())) == 0);
    rm_rf(root());
}

TEST(newest_snapshot_without_ref) {
    use_hf_home();
    mkdirs("hf/hub/models--org--m/snapshots/old");
    mkdirs("hf/hub/models--org--m/snapshots/new");
    mkdirs("hf/hub/models--org--m/snapshots/mid");
    put("hf/hub/models--org--m/snapshots/stray-file", "not a snapshot");
    set_mtime("hf/hub/models--org--m/snapshots/old", 1000);
    set_mtime("hf/hub/models--org--m/snapshots/new", 3000);
    set_mtime("hf/hub/models--org--m/snapshots/mid", 2000);
    set_mtime("hf/hub/models--org--m/snapshots/stray-file", 9000);
    char out[1024], err[512] = "";
    CHECK(modeldir_resolve("org/m", out, sizeof out, err, sizeof err) == 0);
    CHECK(ends_with(out, "/snapshots/new"));
    /* refs/main naming a snapshot that is gone: fall back to the newest */
    mkdirs("hf/hub/models--org--m/refs");
    put("hf/hub/models--org--m/refs/main", "deadbeef");
    CHECK(modeldir_resolve("org/m", out, sizeof out, err, sizeof err) == 0);
    CHECK(ends_with(out, "/snapshots/new"));
    rm_rf(root());
}

TEST(single_snapshot) {
    use_hf_home();
    mkdirs("hf/hub/models--a--b/snapshots/only");
    char out[1024], err[512] = "";
    CHECK(modeldir_resolve("a/b", out, sizeof out, err, sizeof err) == 0);
    CHECK(ends_with(out, "/models--a--b/snapshots/only"));
    rm_rf(root());
}

TEST(cache_root_precedence) {
    char p[512], out[1024], err[512] = "";
    mkdirs("hubcache/models--a--b/snapshots/x");
    mkdirs("hf/hub/models--a--b/snapshots/y");
    mkdirs("home/.cache/huggingface/hub/models--a--b/snapshots/z");
    snprintf(p, sizeof p, "%s/hubcache", root());
    setenv("HF_HUB_CACHE", p, 1);
    snprintf(p, sizeof p, "%s/hf", root());
    setenv("HF_HOME", p, 1);
    snprintf(p, sizeof p, "%s/home", root());
    setenv("HOME", p, 1);
    CHECK(modeldir_resolve("a/b", out, sizeof out, err, sizeof err) == 0 && ends_with(out, "/snapshots/x"));
    unsetenv("HF_HUB_CACHE");
    CHECK(modeldir_resolve("a/b", out, sizeof out, err, sizeof err) == 0 && ends_with(out, "/snapshots/y"));
    unsetenv("HF_HOME");
    CHECK(modeldir_resolve("a/b", out, sizeof out, err, sizeof err) == 0 && ends_with(out, "/snapshots/z"));
    rm_rf(root());
}

TEST(missing_model_names_places) {
    use_hf_home();
    char out[1024], err[1024] = "";
    CHECK(modeldir_resolve("nobody/nothing", out, sizeof out, err, sizeof err) == -1);
    CHECK(strstr(err, "nobody/nothing") != NULL);
    char want[512];
    snprintf(want, sizeof want, "%s/hf/hub/models--nobody--nothing", root());
    CHECK(strstr(err, want) != NULL);
    /* model dir present but no snapshots */
    mkdirs("hf/hub/models--nobody--nothing/snapshots");
    CHECK(modeldir_resolve("nobody/nothing", out, sizeof out, err, sizeof err) == -1);
    CHECK(strstr(err, want) != NULL);
    fprintf(stderr, "  (message: %s)\n", err);
    rm_rf(root());
}

TEST(bad_arguments) {
    use_hf_home();
    char out[1024], err[512] = "";
    const char *bad[] = { "", "justaname", "/no/such/abs/dir", "a/b/c", "../x", "a/..", "org/na me", "/x" };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err[0] = 0;
        CHECK(modeldir_resolve(bad[i], out, sizeof out, err, sizeof err) == -1);
        CHECK(err[0] != 0);
        if (bad[i][0]) CHECK(strstr(err, bad[i]) != NULL);
    }
    rm_rf(root());
}

TEST(output_too_small) {
    use_hf_home();
    mkdirs("hf/hub/models--a--b/snapshots/rev");
    char out[8], err[512] = "";
    CHECK(modeldir_resolve("a/b", out, sizeof out, err, sizeof err) == -1);
    rm_rf(root());
}

TEST_MAIN()
