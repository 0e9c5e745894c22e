/* modeldir.c — resolve a model argument to a checkpoint directory.
 *
 * A local directory wins; otherwise "ORG/NAME" is looked up in the Hugging
 * Face hub cache (see modeldir.h for the order of the cache roots and of the
 * snapshot choice). Only the filesystem is consulted: no network, no
 * config.json, no weights. Every failure message lists the places looked. */
#include "io/modeldir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/util.h"

static bool md_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* ORG/NAME: two non-empty parts of [A-Za-z0-9._-], neither "." nor "..". */
static bool md_is_repo_id(const char *s) {
    const char *slash = strchr(s, '/');
    if (!slash || strchr(slash + 1, '/')) return false;
    size_t lo = (size_t)(slash - s), ln = strlen(slash + 1);
    if (!lo || !ln) return false;
    for (const char *p = s; *p; p++) {
        if (p == slash) continue;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-'))
            return false;
    }
    if ((lo <= 2 && strncmp(s, "..", lo) == 0) || strcmp(slash + 1, ".") == 0 || strcmp(slash + 1, "..") == 0)
        return false;
    return true;
}

/* The hub cache root and which setting chose it, for messages. */
static int md_hub_root(char *out, size_t outlen, const char **why, char *err, size_t errlen) {
    const char *v;
    int n;
    if ((v = getenv("HF_HUB_CACHE")) && *v) {
        *why = "$HF_HUB_CACHE";
        n = snprintf(out, outlen, "%s", v);
    } else if ((v = getenv("HF_HOME")) && *v) {
        *why = "$HF_HOME/hub";
        n = snprintf(out, outlen, "%s/hub", v);
    } else if ((v = getenv("HOME")) && *v) {
        *why = "$HOME/.cache/huggingface/hub";
        n = snprintf(out, outlen, "%s/.cache/huggingface/hub", v);
    } else {
        return errf(err, errlen, "no Hugging Face cache: none of HF_HUB_CACHE, HF_HOME, HOME is set");
    }
    if (n < 0 || (size_t)n >= outlen) return errf(err, errlen, "Hugging Face cache path too long (%s)", *why);
    return 0;
}

/* Commit named by refs/main, trimmed; "" if absent or unusable. */
static void md_read_ref(const char *model_dir, char *rev, size_t revlen) {
    char path[4096];
    rev[0] = 0;
    if ((size_t)snprintf(path, sizeof path, "%s/refs/main", model_dir) >= sizeof path) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (!fgets(rev, (int)revlen, f)) rev[0] = 0;
    fclose(f);
    size_t n = strcspn(rev, " \t\r\n");
    rev[n] = 0;
    if (strchr(rev, '/') || strcmp(rev, ".") == 0 || strcmp(rev, "..") == 0) rev[0] = 0;
}

/* The most recently modified directory under snap (ties: greatest name). */
static int md_newest_snapshot(const char *snap, char *rev, size_t revlen) {
    DIR *d = opendir(snap);
    if (!d) return -1;
    struct dirent *de;
    struct timespec best = { 0, 0 };
    int found = -1;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[4096];
        struct stat sb;
        if ((size_t)snprintf(p, sizeof p, "%s/%s", snap, de->d_name) >= sizeof p) continue;
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode) || strlen(de->d_name) >= revlen) continue;
        struct timespec m = sb.st_mtim;
        bool newer = found != 0 || m.tv_sec > best.tv_sec || (m.tv_sec == best.tv_sec && m.tv_nsec > best.tv_nsec) ||
                     (m.tv_sec == best.tv_sec && m.tv_nsec == best.tv_nsec && strcmp(de->d_name, rev) > 0);
        if (newer) {
            best = m;
            snprintf(rev, revlen, "%s", de->d_name);
            found = 0;
        }
    }
    closedir(d);
    return found;
}

int modeldir_resolve(const char *arg, char *out, size_t outlen, char *err, size_t errlen) {
    if (!arg || !*arg) return errf(err, errlen, "empty model argument");
    struct stat sb;
    if (stat(arg, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) return errf(err, errlen, "model '%s' exists but is not a directory", arg);
        if ((size_t)snprintf(out, outlen, "%s", arg) >= outlen) return errf(err, errlen, "model path too long: %s", arg);
        return 0;
    }
    if (!md_is_repo_id(arg))
        return errf(err, errlen, "model '%s': no such local directory, and not an ORG/NAME model id", arg);

    char hub[2048], mdir[4096], snap[sizeof mdir + 16], rev[256], cand[sizeof snap + sizeof rev + 2];
    const char *why = "";
    if (md_hub_root(hub, sizeof hub, &why, err, errlen) != 0) return -1;
    const char *slash = strchr(arg, '/');
    int n = snprintf(mdir, sizeof mdir, "%s/models--%.*s--%s", hub, (int)(slash - arg), arg, slash + 1);
    if (n < 0 || (size_t)n >= sizeof mdir) return errf(err, errlen, "model '%s': cache path too long", arg);
    snprintf(snap, sizeof snap, "%s/snapshots", mdir);
    if (!md_is_dir(snap))
        return errf(err, errlen,
                    "model '%s' not found: no local directory ./%s, and no %s in the Hugging Face cache (%s); "
                    "download it first, e.g. `huggingface-cli download %s`",
                    arg, arg, snap, why, arg);

    md_read_ref(mdir, rev, sizeof rev);
    if (rev[0]) {
        snprintf(cand, sizeof cand, "%s/%s", snap, rev);
        if (md_is_dir(cand)) goto found;
        log_warn("%s/refs/main names %s, which is not in %s; using the newest snapshot", mdir, rev, snap);
    }
    if (md_newest_snapshot(snap, rev, sizeof rev) != 0)
        return errf(err, errlen,
                    "model '%s' not found: no local directory ./%s, and %s (from %s) has no snapshot%s%s%s", arg,
                    arg, snap, why, rev[0] ? " (refs/main names " : "", rev, rev[0] ? ")" : "");
    snprintf(cand, sizeof cand, "%s/%s", snap, rev);
found:
    if ((size_t)snprintf(out, outlen, "%s", cand) >= outlen) return errf(err, errlen, "model path too long: %s", cand);
    return 0;
}
