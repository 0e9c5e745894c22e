/* paths.c — where the bundled demo model is, for commands run without a
 * MODEL argument (`vllmc chat`, and `vllmc serve` through main.c).
 *
 * Looks beside the running binary (/proc/self/exe, links resolved), so it
 * works from any build directory of a checkout (BUILD/vllmc ->
 * models/demo) and after `make install` (PREFIX/bin/vllmc ->
 * PREFIX/share/vllmc/models/demo). $VLLMC_DEMO_MODEL, when set, wins.
 *
 * Does not: search $PATH, the current directory or the Hugging Face cache
 * (an explicit MODEL argument does that). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static int is_model_dir(const char *dir) {
    char p[PATH_MAX + 32];
    struct stat sb;
    snprintf(p, sizeof p, "%s/config.json", dir);
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

int default_model_dir(char *buf, size_t len, char *err, size_t errlen) {
    const char *env = getenv("VLLMC_DEMO_MODEL");
    if (env && *env) {
        if (!is_model_dir(env)) {
            snprintf(err, errlen, "$VLLMC_DEMO_MODEL=%s: no config.json there", env);
            return -1;
        }
        snprintf(buf, len, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(err, errlen, "cannot find the demo model: /proc/self/exe: %s (give a MODEL)", strerror(errno));
        return -1;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0; /* the binary's directory */
    static const char *const rel[] = { "../models/demo", "../share/vllmc/models/demo" };
    char tried[2 * PATH_MAX + 64] = "";
    for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
        char cand[PATH_MAX + 64];
        snprintf(cand, sizeof cand, "%s/%s", exe, rel[i]);
        char real[PATH_MAX];
        if (realpath(cand, real) && is_model_dir(real)) {
            if (strlen(real) >= len) {
                snprintf(err, errlen, "demo model path too long: %s", real);
                return -1;
            }
            snprintf(buf, len, "%s", real);
            return 0;
        }
        size_t tl = strlen(tried);
        snprintf(tried + tl, sizeof tried - tl, "%s%s", tl ? ", " : "", cand);
    }
    snprintf(err, errlen, "no MODEL given and no demo model found (looked in %s)", tried);
    return -1;
}
