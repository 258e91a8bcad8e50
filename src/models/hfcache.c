#include "models/hfcache.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HF_ID_MAX 96
#define HF_REV_MAX 255

static bool id_part_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '_' || c == '-' || c == '.'))
            return false;
        if (i + 1 < n && (c == '-' || c == '.') && s[i + 1] == c)
            return false; /* "--" (the cache's separator) and ".." */
    }
    return s[0] != '-' && s[0] != '.' && s[n - 1] != '-' && s[n - 1] != '.';
}

static bool id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    const char *slash = strchr(s, '/');
    if (n == 0 || n > HF_ID_MAX || !slash || strchr(slash + 1, '/'))
        return false;
    return id_part_ok(s, (size_t)(slash - s)) && id_part_ok(slash + 1, strlen(slash + 1));
}

static bool rev_valid(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > HF_REV_MAX || r[0] == '/' || r[n - 1] == '/' || strstr(r, "..") || strstr(r, "//"))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)r[i];
        if (!(isalnum(c) || c == '_' || c == '-' || c == '.' || c == '/'))
            return false;
    }
    return true;
}

bool sd_looks_like_hf_id(const char *s) { return id_valid(s) && !sd_file_exists(s) && !sd_dir_exists(s); }

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Cache root and a description of where it came from (static strings). */
static char *cache_root(const char **how)
{
    const char *v;
    if ((v = env_nonempty("HF_HUB_CACHE"))) {
        *how = "$HF_HUB_CACHE";
        return sd_strdup(v);
    }
    if ((v = env_nonempty("HUGGINGFACE_HUB_CACHE"))) {
        *how = "$HUGGINGFACE_HUB_CACHE";
        return sd_strdup(v);
    }
    if ((v = env_nonempty("HF_HOME"))) {
        *how = "$HF_HOME/hub";
        return sd_path_join(v, "hub");
    }
    if ((v = env_nonempty("XDG_CACHE_HOME"))) {
        *how = "$XDG_CACHE_HOME/huggingface/hub";
        return sd_path_join(v, "huggingface/hub");
    }
    if ((v = env_nonempty("HOME"))) {
        *how = "$HOME/.cache/huggingface/hub";
        return sd_path_join(v, ".cache/huggingface/hub");
    }
    *how = "none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HOME is set";
    return NULL;
}

char *sd_hf_cache_dir(void)
{
    const char *how;
    return cache_root(&how);
}

/* Lists up to a few entries of a folder into buf ("a, b, c" or "(none)"). */
static void list_dir(const char *dir, char *buf, size_t cap)
{
    buf[0] = 0;
    DIR *d = opendir(dir);
    size_t o = 0;
    int n = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            if (n == 6) {
                if (o < cap)
                    o += (size_t)snprintf(buf + o, cap - o, ", ...");
                break;
            }
            if (o < cap)
                o += (size_t)snprintf(buf + o, cap - o, "%s%s", n ? ", " : "", e->d_name);
            n++;
        }
        closedir(d);
    }
    if (n == 0)
        snprintf(buf, cap, "(none)");
}

/* Reads refs/<rev>: a commit hash on one line. */
static sd_status read_ref(const char *path, char *hash, size_t cap)
{
    char *data = NULL;
    size_t len = 0;
    SD_TRY(sd_read_file(path, 4096, &data, &len));
    size_t a = 0, b = len;
    while (a < b && isspace((unsigned char)data[a]))
        a++;
    while (b > a && isspace((unsigned char)data[b - 1]))
        b--;
    bool ok = b > a && b - a < cap;
    for (size_t i = a; ok && i < b; i++)
        ok = isalnum((unsigned char)data[i]) != 0;
    if (ok) {
        memcpy(hash, data + a, b - a);
        hash[b - a] = 0;
    }
    free(data);
    if (!ok)
        return sd_fail(SD_ERR_FORMAT, "%s: expected a commit hash (letters and digits) on one line", path);
    return SD_OK;
}

sd_status sd_hf_resolve(const char *model_id, const char *revision, char **snapshot_dir)
{
    *snapshot_dir = NULL;
    if (!id_valid(model_id))
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "'%s' is not a valid Hugging Face model id: expected \"org/name\" made of letters, digits, "
                       "'-', '_' and '.' (no '..', '--', leading '/' or more than one '/'); to use a model folder "
                       "or file, pass its path",
                       model_id ? model_id : "(null)");
    const char *rev = revision && *revision ? revision : "main";
    if (!rev_valid(rev))
        return sd_fail(SD_ERR_INVALID_ARGUMENT,
                       "'%s' is not a valid revision: use a branch or tag name or a commit hash (letters, digits, "
                       "'-', '_', '.', '/', no '..')",
                       rev);
    const char *how;
    char *root = cache_root(&how);
    if (!root)
        return sd_fail(SD_ERR_NOT_FOUND,
                       "%s: no Hugging Face cache folder is known (%s); set HF_HUB_CACHE or HF_HOME, run "
                       "`huggingface-cli download %s`, or pass the model folder instead",
                       model_id, how, model_id);

    /* models--org--name */
    char folder[HF_ID_MAX + 16];
    snprintf(folder, sizeof folder, "models--%s", model_id);
    char *slash = strchr(folder, '/');
    memmove(slash + 2, slash + 1, strlen(slash + 1) + 1);
    slash[0] = slash[1] = '-';

    sd_status s = SD_OK;
    char *repo = sd_path_join(root, folder);
    char *refs = repo ? sd_path_join(repo, "refs") : NULL;
    char *snaps = repo ? sd_path_join(repo, "snapshots") : NULL;
    char *ref = refs ? sd_path_join(refs, rev) : NULL;
    char *snap = NULL;
    if (!repo || !refs || !snaps || !ref) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    if (!sd_dir_exists(repo)) {
        s = sd_fail(SD_ERR_NOT_FOUND,
                    "model '%s' is not in the local Hugging Face cache: looked for %s (cache root from %s). "
                    "Nothing is downloaded: run `huggingface-cli download %s` first, set HF_HUB_CACHE/HF_HOME to "
                    "the cache that has it, or pass a model folder or .safetensors file instead",
                    model_id, repo, how, model_id);
        goto done;
    }
    char hash[256];
    if (sd_file_exists(ref)) {
        s = read_ref(ref, hash, sizeof hash);
        if (s != SD_OK)
            goto done;
        snap = sd_path_join(snaps, hash);
        if (!snap) {
            s = SD_ERR_OUT_OF_MEMORY;
            goto done;
        }
        if (!sd_dir_exists(snap)) {
            s = sd_fail(SD_ERR_NOT_FOUND,
                        "model '%s': %s points to commit %s but %s does not exist (incomplete download?); run "
                        "`huggingface-cli download %s%s%s` or pass a model folder",
                        model_id, ref, hash, snap, model_id, revision ? " --revision " : "", revision ? rev : "");
            goto done;
        }
    } else {
        bool hashlike = !strchr(rev, '/');
        snap = hashlike ? sd_path_join(snaps, rev) : NULL;
        if (!snap || !sd_dir_exists(snap)) {
            char have_refs[256], have_snaps[512];
            list_dir(refs, have_refs, sizeof have_refs);
            list_dir(snaps, have_snaps, sizeof have_snaps);
            s = sd_fail(SD_ERR_NOT_FOUND,
                        "model '%s' revision '%s' is not in the local Hugging Face cache: looked for %s and "
                        "%s/%s (cache root from %s; refs there: %s; snapshots: %s). Nothing is downloaded: run "
                        "`huggingface-cli download %s --revision %s` or pass a model folder",
                        model_id, rev, ref, snaps, rev, how, have_refs, have_snaps, model_id, rev);
            goto done;
        }
    }
    *snapshot_dir = snap;
    snap = NULL;
done:
    free(snap);
    free(ref);
    free(snaps);
    free(refs);
    free(repo);
    free(root);
    return s;
}
