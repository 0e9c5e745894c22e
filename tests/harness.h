/* harness.h — the test runner (header-only). Each tests/unit/test_*.c is one
 * binary: it defines tests with TEST(name) and ends with TEST_MAIN(). Every
 * test runs in a forked child, so a crash counts as one failure with its
 * signal and the rest still run. The binary prints one line per test and a
 * final "## N passed, N failed, N skipped"; tests/run.sh sums all binaries
 * into the single summary line `make test` ends with.
 *
 *   TEST(parse_ok) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); }
 *   SKIP("no GPU")   -- marks the running test skipped
 * argv[1], if given, runs only tests whose name contains it. */
#ifndef VLLMC_TEST_HARNESS_H
#define VLLMC_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*test_fn)(void);
struct test_entry { const char *name; test_fn fn; };
static struct test_entry test_list_[512];
static int test_count_;
static int test_failed_here_;

#define TEST(name)                                                              \
    static void test_##name(void);                                              \
    __attribute__((constructor)) static void test_reg_##name(void) {            \
        test_list_[test_count_++] = (struct test_entry){ #name, test_##name };  \
    }                                                                           \
    static void test_##name(void)

#define CHECK(cond) do { if (!(cond)) {                                         \
        fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
        test_failed_here_ = 1; } } while (0)
#define REQUIRE(cond) do { if (!(cond)) {                                       \
        fprintf(stderr, "  %s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__, #cond); \
        fflush(stderr); _exit(1); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b);                   \
        if (!(fabs(a_ - b_) <= (tol))) {                                         \
        fprintf(stderr, "  %s:%d: |%s - %s| = |%g - %g| > %g\n", __FILE__, __LINE__, \
                #a, #b, a_, b_, (double)(tol)); test_failed_here_ = 1; } } while (0)
#define SKIP(why) do { fprintf(stderr, "  skipped: %s\n", why); fflush(stderr); _exit(77); } while (0)

static int test_main_(int argc, char **argv) {
    int pass = 0, fail = 0, skip = 0;
    const char *filter = argc > 1 ? argv[1] : NULL;
    for (int i = 0; i < test_count_; i++) {
        if (filter && !strstr(test_list_[i].name, filter)) continue;
        fflush(stdout); fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
            test_list_[i].fn();
            /* exit(), not _exit(): LeakSanitizer checks at exit in SAN builds */
            exit(test_failed_here_ ? 1 : 0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) { pass++; printf("ok    %s\n", test_list_[i].name); }
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 77) { skip++; printf("skip  %s\n", test_list_[i].name); }
        else {
            fail++;
            if (WIFSIGNALED(st)) printf("FAIL  %s (signal %d)\n", test_list_[i].name, WTERMSIG(st));
            else printf("FAIL  %s\n", test_list_[i].name);
        }
    }
    printf("## %d passed, %d failed, %d skipped\n", pass, fail, skip);
    return fail ? 1 : 0;
}
#define TEST_MAIN() int main(int argc, char **argv) { return test_main_(argc, argv); }

/* A fresh directory under /tmp for this test's files, removed when the test's
 * process exits (each test runs in its own forked process). */
#include <dirent.h>
static char test_tmp_dirs_[16][64];
static int test_tmp_n_;
static void test_tmp_cleanup_(void) { /* the dirs hold plain files only */
    for (int i = 0; i < test_tmp_n_; i++) {
        DIR *d = opendir(test_tmp_dirs_[i]);
        struct dirent *e;
        char p[512];
        while (d && (e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", test_tmp_dirs_[i], e->d_name);
                unlink(p);
            }
        if (d) closedir(d);
        rmdir(test_tmp_dirs_[i]);
    }
    test_tmp_n_ = 0;
}
static inline const char *test_mkdtemp(void) {
    if (test_tmp_n_ == 16) { fprintf(stderr, "  too many temp dirs in one test\n"); _exit(1); }
    char *d = test_tmp_dirs_[test_tmp_n_];
    snprintf(d, sizeof test_tmp_dirs_[0], "/tmp/vllmc_test_XXXXXX");
    if (!mkdtemp(d)) { perror("mkdtemp"); _exit(1); }
    if (test_tmp_n_++ == 0) atexit(test_tmp_cleanup_);
    return d;
}
/* Write text to DIR/NAME in a fresh temp dir; returns the dir. */
static inline const char *test_write_tmp(const char *name, const char *text) {
    const char *dir = test_mkdtemp();
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f || fputs(text, f) < 0) { perror(p); _exit(1); }
    fclose(f);
    return dir;
}

/* Small helpers shared by tests. */
static inline unsigned long long test_rng_next_(unsigned long long *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s;
}
/* uniform in [-1, 1) */
static inline float test_randf(unsigned long long *s) {
    return (float)((test_rng_next_(s) >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

#endif
