#include "models/lora.h"

#include "models/checkpoint.h"
#include "models/hfcache.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COMPS 4
#define UNMATCHED_SHOWN 8

/* ================================================================== model tables */

typedef struct slot {
    char *name; /* "<module>.weight" */
    sd_tensor *t;
} slot;

typedef struct kname {
    char *key; /* kohya name or dotted module name (no ".weight") */
    int slot;  /* -2: two modules share this kohya name (ambiguous) */
} kname;

typedef struct comp_table {
    const sd_lora_component *c;
    slot *slots;
    size_t n_slots, cap_slots;
    kname *kohya, *mods;
    size_t n_names;
} comp_table;

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !memcmp(s + n - m, suf, m);
}

static bool starts_with(const char *s, const char *pre) { return !strncmp(s, pre, strlen(pre)); }

/* A weight a LoRA can modify: "<module>.weight", a matrix or conv kernel, no embedding table. */
static bool is_target(const char *name, const sd_tensor *t)
{
    return ends_with(name, ".weight") && t->ndim >= 2 && !ends_with(name, "embedding.weight") &&
           (t->dtype == SD_F32 || t->dtype == SD_F16 || t->dtype == SD_BF16);
}

static sd_status collect_slot(void *user, const char *name, sd_tensor *t)
{
    comp_table *ct = user;
    if (!is_target(name, t))
        return SD_OK;
    if (ct->n_slots == ct->cap_slots) {
        size_t nc = ct->cap_slots ? 2 * ct->cap_slots : 256;
        slot *ns = realloc(ct->slots, nc * sizeof *ns);
        if (!ns)
            return sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
        ct->slots = ns;
        ct->cap_slots = nc;
    }
    char *copy = sd_strdup(name);
    if (!copy)
        return SD_ERR_OUT_OF_MEMORY;
    ct->slots[ct->n_slots++] = (slot){copy, t};
    return SD_OK;
}

static int cmp_kname(const void *a, const void *b) { return strcmp(((const kname *)a)->key, ((const kname *)b)->key); }

static void table_free(comp_table *ct)
{
    for (size_t i = 0; i < ct->n_slots; i++)
        free(ct->slots[i].name);
    free(ct->slots);
    for (size_t i = 0; i < ct->n_names; i++) {
        if (ct->kohya)
            free(ct->kohya[i].key);
        if (ct->mods)
            free(ct->mods[i].key);
    }
    free(ct->kohya);
    free(ct->mods);
    memset(ct, 0, sizeof *ct);
}

static sd_status table_build(comp_table *ct, const sd_lora_component *c)
{
    memset(ct, 0, sizeof *ct);
    ct->c = c;
    SD_TRY(c->for_each(c->model, collect_slot, ct));
    size_t n = ct->n_slots;
    ct->kohya = sd_calloc(n ? n : 1, sizeof *ct->kohya);
    ct->mods = sd_calloc(n ? n : 1, sizeof *ct->mods);
    if (!ct->kohya || !ct->mods)
        return SD_ERR_OUT_OF_MEMORY;
    size_t pl = strlen(c->kohya_prefix);
    for (size_t i = 0; i < n; i++) {
        const char *name = ct->slots[i].name;
        size_t ml = strlen(name) - strlen(".weight");
        char *mod = sd_malloc(ml + 1), *ko = sd_malloc(pl + ml + 1);
        if (!mod || !ko) {
            free(mod);
            free(ko);
            return SD_ERR_OUT_OF_MEMORY;
        }
        memcpy(mod, name, ml);
        mod[ml] = 0;
        memcpy(ko, c->kohya_prefix, pl);
        for (size_t k = 0; k <= ml; k++)
            ko[pl + k] = mod[k] == '.' ? '_' : mod[k];
        ct->mods[i] = (kname){mod, (int)i};
        ct->kohya[i] = (kname){ko, (int)i};
        ct->n_names = i + 1;
    }
    if (n) {
        qsort(ct->kohya, n, sizeof *ct->kohya, cmp_kname);
        qsort(ct->mods, n, sizeof *ct->mods, cmp_kname);
    }
    for (size_t i = 1; i < n; i++)
        if (!strcmp(ct->kohya[i - 1].key, ct->kohya[i].key))
            ct->kohya[i - 1].slot = ct->kohya[i].slot = -2;
    return SD_OK;
}

static int table_find(const kname *v, size_t n, const char *key)
{
    kname k = {.key = (char *)key};
    const kname *e = n ? bsearch(&k, v, n, sizeof k, cmp_kname) : NULL;
    return e ? e->slot : -1;
}

/* ================================================================== LoRA files */

typedef struct layer {
    int comp, slot;
    const sd_st_tensor *down, *up, *alpha;
} layer;

typedef struct peft_cfg {
    bool present;
    bool has_alpha;
    double lora_alpha;
    bool rslora;
    const cJSON *alpha_pattern; /* object or NULL (inside the file's cfg_json) */
} peft_cfg;

typedef struct lora_file {
    char *path; /* the .safetensors file read */
    const char *label;
    sd_safetensors *st;
    float scale;
    layer *layers;
    size_t n_layers, cap_layers;
    cJSON *cfg_json[MAX_COMPS + 1];
    peft_cfg cfg[MAX_COMPS];
} lora_file;

static void file_free(lora_file *f)
{
    sd_safetensors_close(f->st);
    free(f->layers);
    for (int i = 0; i <= MAX_COMPS; i++)
        cJSON_Delete(f->cfg_json[i]);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ---------------------------------------------------------------- variants */

typedef struct variant {
    const char *marker;
    bool suffix; /* marker must end the key (else: anywhere) */
    const char *what;
} variant;

static const variant k_variants[] = {
    {"hada_w1", false, "LoHa (hada_*)"},
    {"hada_w2", false, "LoHa (hada_*)"},
    {"hada_t1", false, "LoHa (hada_*)"},
    {"lokr_w1", false, "LoKr (lokr_*)"},
    {"lokr_w2", false, "LoKr (lokr_*)"},
    {"lokr_t2", false, "LoKr (lokr_*)"},
    {"dora_scale", false, "DoRA (dora_scale)"},
    {"lora_magnitude_vector", false, "DoRA (lora_magnitude_vector)"},
    {".lora_mid.", false, "LoCon with CP/Tucker decomposition (lora_mid)"},
    {"oft_blocks", false, "OFT (oft_blocks)"},
    {"oft_diag", false, "OFT (oft_diag)"},
    {"oft_r.", false, "OFT (oft_r)"},
    {"boft_", false, "BOFT (boft_*)"},
    {".on_input", true, "(IA)^3 (on_input)"},
    {"ia3_l", false, "(IA)^3 (ia3_l)"},
    {".diff", true, "LyCORIS full weight difference (diff)"},
    {".diff_b", true, "LyCORIS full weight difference (diff_b)"},
    {".w_norm", true, "LyCORIS norm (w_norm)"},
    {".b_norm", true, "LyCORIS norm (b_norm)"},
    {".a1.weight", true, "GLoRA (a1/a2/b1/b2)"},
    {".b1.weight", true, "GLoRA (a1/a2/b1/b2)"},
    {"lora_embedding_A", false, "LoRA of an embedding table (lora_embedding_A/B)"},
    {"lora_embedding_B", false, "LoRA of an embedding table (lora_embedding_A/B)"},
    {".lora_B.bias", true, "LoRA with a bias (lora_B.bias)"},
    {".lora_up.bias", true, "LoRA with a bias (lora_up.bias)"},
    {".lora.up.bias", true, "LoRA with a bias (lora.up.bias)"},
};

static const char *variant_of(const char *key)
{
    for (size_t i = 0; i < SD_ARRAY_LEN(k_variants); i++) {
        const variant *v = &k_variants[i];
        if (v->suffix ? ends_with(key, v->marker) : strstr(key, v->marker) != NULL)
            return v->what;
    }
    return NULL;
}

/* ---------------------------------------------------------------- key parsing */

typedef enum { R_DOWN, R_UP, R_ALPHA } role;

typedef struct suffix {
    const char *s;
    role r;
    bool procs; /* attention-processor spelling: "to_q_lora.down.weight" */
} suffix;

static const suffix k_suffixes[] = {
    {".lora_down.weight", R_DOWN, false},
    {".lora_up.weight", R_UP, false},
    {".lora_A.weight", R_DOWN, false},
    {".lora_B.weight", R_UP, false},
    {".lora_linear_layer.down.weight", R_DOWN, false},
    {".lora_linear_layer.up.weight", R_UP, false},
    {".lora.down.weight", R_DOWN, false},
    {".lora.up.weight", R_UP, false},
    {"_lora.down.weight", R_DOWN, true},
    {"_lora.up.weight", R_UP, true},
};

/* Splits `key` into module and role. Returns false for a name with no LoRA suffix. */
static bool split_key(const char *key, char *mod, size_t cap, role *r, bool *procs)
{
    size_t n = strlen(key);
    if (n >= cap)
        return false;
    memcpy(mod, key, n + 1);
    bool alpha = ends_with(mod, ".alpha");
    if (alpha)
        mod[n - strlen(".alpha")] = 0;
    *procs = false;
    for (size_t i = 0; i < SD_ARRAY_LEN(k_suffixes); i++) {
        const suffix *s = &k_suffixes[i];
        if (ends_with(mod, s->s)) {
            mod[strlen(mod) - strlen(s->s)] = 0;
            *r = alpha ? R_ALPHA : s->r;
            *procs = s->procs;
            return *mod != 0;
        }
    }
    *r = R_ALPHA;
    return alpha && *mod;
}

/* Removes every ".processor" path segment in place. */
static void drop_processor(char *m)
{
    char *p;
    while ((p = strstr(m, ".processor")) && (p[10] == '.' || p[10] == 0))
        memmove(p, p + 10, strlen(p + 10) + 1);
}

/* Looks a dotted module up in a component, with the attention-processor spellings. */
static int find_module_1(const comp_table *ct, const char *mod, bool procs)
{
    int s = table_find(ct->mods, ct->n_names, mod);
    if (s >= 0 || !procs)
        return s;
    static const char *const unet_map[][2] = {{".to_out", ".to_out.0"}};
    static const char *const te_map[][2] = {
        {".to_q", ".q_proj"}, {".to_k", ".k_proj"}, {".to_v", ".v_proj"}, {".to_out", ".out_proj"}};
    char buf[600];
    for (int pass = 0; pass < 2; pass++) {
        const char *const(*map)[2] = pass ? te_map : unet_map;
        size_t nm = pass ? SD_ARRAY_LEN(te_map) : SD_ARRAY_LEN(unet_map);
        for (size_t i = 0; i < nm; i++) {
            if (!ends_with(mod, map[i][0]))
                continue;
            size_t base = strlen(mod) - strlen(map[i][0]);
            if (base + strlen(map[i][1]) >= sizeof buf)
                continue;
            memcpy(buf, mod, base);
            strcpy(buf + base, map[i][1]);
            s = table_find(ct->mods, ct->n_names, buf);
            if (s >= 0)
                return s;
        }
    }
    return -1;
}

static int find_module(const comp_table *ct, const char *mod, bool procs)
{
    int s = find_module_1(ct, mod, procs);
    const char *root = ct->c->alt_root;
    if (s >= 0 || !root || starts_with(mod, root))
        return s;
    char buf[700];
    size_t rl = strlen(root), ml = strlen(mod);
    if (rl + ml >= sizeof buf)
        return -1;
    memcpy(buf, root, rl);
    memcpy(buf + rl, mod, ml + 1);
    return find_module_1(ct, buf, procs);
}

/* Kohya lookup; also with the component's alt_root inserted after the prefix. */
static int find_kohya(const comp_table *ct, const char *name)
{
    int s = table_find(ct->kohya, ct->n_names, name);
    const char *root = ct->c->alt_root;
    if (s != -1 || !root)
        return s;
    size_t pl = strlen(ct->c->kohya_prefix), rl = strlen(root);
    char buf[700];
    if (pl + rl + strlen(name + pl) >= sizeof buf)
        return -1;
    memcpy(buf, name, pl);
    for (size_t i = 0; i < rl; i++)
        buf[pl + i] = root[i] == '.' ? '_' : root[i];
    strcpy(buf + pl + rl, name + pl);
    if (!strncmp(name + pl, buf + pl, rl))
        return -1; /* already has it */
    return table_find(ct->kohya, ct->n_names, buf);
}

/* Maps a module to (component, slot). Returns false (with a reason) when nothing matches. */
static bool resolve(const comp_table *tabs, int nt, const char *module, bool procs, int *comp, int *slot_out,
                    const char **why)
{
    *why = "matches no layer of this model";
    char m[600];
    snprintf(m, sizeof m, "%s", module);
    if (starts_with(m, "lora_te1_")) { /* SDXL's first text encoder = SD's text encoder */
        memmove(m + 7, m + 8, strlen(m + 8) + 1);
    }
    if (starts_with(m, "lora_")) {
        for (int c = 0; c < nt; c++) {
            if (!starts_with(m, tabs[c].c->kohya_prefix))
                continue;
            int s = find_kohya(&tabs[c], m);
            char ldm[600];
            size_t pl = strlen(tabs[c].c->kohya_prefix);
            if (s == -1 && tabs[c].c->ldm_layers_per_block > 0 && /* kohya's SDXL LoRAs: LDM names */
                sd_ckpt_unet_ldm_module(m + pl, tabs[c].c->ldm_layers_per_block, ldm, sizeof ldm))
                s = table_find(tabs[c].mods, tabs[c].n_names, ldm);
            if (s == -2) {
                *why = "is ambiguous (two layers of this model have this kohya name)";
                return false;
            }
            if (s >= 0) {
                *comp = c;
                *slot_out = s;
                return true;
            }
        }
        if (starts_with(m, "lora_te2_"))
            *why = "is for SDXL's second text encoder, which this model does not have";
        return false;
    }
    char *p = m;
    if (starts_with(p, "base_model.model."))
        p += strlen("base_model.model.");
    drop_processor(p);
    for (int c = 0; c < nt; c++) {
        size_t cl = strlen(tabs[c].c->name);
        if (!strncmp(p, tabs[c].c->name, cl) && p[cl] == '.') {
            int s = find_module(&tabs[c], p + cl + 1, procs);
            if (s < 0)
                return false;
            *comp = c;
            *slot_out = s;
            return true;
        }
    }
    if (starts_with(p, "text_encoder_2.")) {
        *why = "is for SDXL's second text encoder, which this model does not have";
        return false;
    }
    for (int c = 0; c < nt; c++) { /* no component prefix (PEFT adapter of one model) */
        int s = find_module(&tabs[c], p, procs);
        if (s >= 0) {
            *comp = c;
            *slot_out = s;
            return true;
        }
    }
    return false;
}

/* ---------------------------------------------------------------- PEFT config */

static sd_status read_peft_cfg(lora_file *f, const cJSON *obj, const char *prefix, peft_cfg *out, const char *where)
{
    char k[96];
    memset(out, 0, sizeof *out);
    out->present = true;
#define FIELD(name) (snprintf(k, sizeof k, "%s%s", prefix, name), cJSON_GetObjectItemCaseSensitive(obj, k))
    const cJSON *pt = FIELD("peft_type");
    if (cJSON_IsString(pt) && strcmp(pt->valuestring, "LORA"))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: %s says peft_type '%s'; only LORA adapters are supported", f->label,
                       where, pt->valuestring);
    const cJSON *dora = FIELD("use_dora");
    if (cJSON_IsTrue(dora))
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: %s says use_dora: DoRA adapters are not supported", f->label, where);
    const cJSON *a = FIELD("lora_alpha");
    if (cJSON_IsNumber(a)) {
        out->has_alpha = true;
        out->lora_alpha = a->valuedouble;
    }
    out->rslora = cJSON_IsTrue(FIELD("use_rslora"));
    const cJSON *ap = FIELD("alpha_pattern");
    out->alpha_pattern = cJSON_IsObject(ap) && ap->child ? ap : NULL;
#undef FIELD
    const cJSON *e;
    if (out->alpha_pattern)
        cJSON_ArrayForEach(e, out->alpha_pattern)
        {
            if (!cJSON_IsNumber(e))
                return sd_fail(SD_ERR_FORMAT, "%s: %s: alpha_pattern['%s'] is not a number", f->label, where,
                               e->string);
        }
    return SD_OK;
}

/* PEFT alpha of a module: the first alpha_pattern key p with ^(.*\.)?(p)$ matching, else lora_alpha. */
static sd_status peft_alpha(const lora_file *f, const peft_cfg *c, const char *module, double rank, double *alpha)
{
    *alpha = c->has_alpha ? c->lora_alpha : rank;
    const cJSON *e;
    if (!c->alpha_pattern)
        return SD_OK;
    cJSON_ArrayForEach(e, c->alpha_pattern)
    {
        size_t n = strlen(e->string) + 16;
        char *re = sd_malloc(n);
        if (!re)
            return SD_ERR_OUT_OF_MEMORY;
        snprintf(re, n, "^(.*\\.)?(%s)$", e->string);
        regex_t rx;
        int rc = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);
        free(re);
        if (rc != 0)
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: alpha_pattern key '%s' is not a regular expression this build "
                           "understands (POSIX extended)", f->label, e->string);
        bool hit = regexec(&rx, module, 0, NULL, 0) == 0;
        regfree(&rx);
        if (hit) {
            *alpha = e->valuedouble;
            return SD_OK;
        }
    }
    return SD_OK;
}

/* ---------------------------------------------------------------- opening */

static char *dir_of(const char *path)
{
    const char *sl = strrchr(path, '/');
    if (!sl)
        return sd_strdup(".");
    size_t n = (size_t)(sl - path);
    char *d = sd_malloc(n + 2);
    if (!d)
        return NULL;
    memcpy(d, path, n ? n : 1);
    d[n ? n : 1] = 0;
    return d;
}

static sd_status load_json_file(const char *path, cJSON **out)
{
    char *text;
    size_t len;
    SD_TRY(sd_read_file(path, 1 << 20, &text, &len));
    *out = cJSON_ParseWithLength(text, len);
    free(text);
    if (!*out || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return sd_fail(SD_ERR_FORMAT, "%s: not a JSON object", path);
    }
    return SD_OK;
}

/* Opens the file (or PEFT / diffusers folder, or Hugging Face id of one in the local cache, e.g.
 * latent-consistency/lcm-lora-sdxl) and reads its PEFT configuration. */
static sd_status file_open_at(lora_file *f, const sd_lora_spec *spec, const char *path, const comp_table *tabs,
                              int nt);

static sd_status file_open(lora_file *f, const sd_lora_spec *spec, const comp_table *tabs, int nt)
{
    memset(f, 0, sizeof *f);
    char *snap = NULL;
    if (!sd_dir_exists(spec->path) && !sd_file_exists(spec->path) && sd_looks_like_hf_id(spec->path) &&
        !ends_with(spec->path, ".safetensors"))
        SD_TRY(sd_hf_resolve(spec->path, NULL, &snap));
    sd_status s = file_open_at(f, spec, snap ? snap : spec->path, tabs, nt);
    free(snap);
    return s;
}

static sd_status file_open_at(lora_file *f, const sd_lora_spec *spec, const char *path, const comp_table *tabs,
                              int nt)
{
    f->label = spec->path;
    f->scale = spec->scale;
    char *cfg_path = NULL;
    if (sd_dir_exists(path)) {
        static const char *const names[] = {"adapter_model.safetensors", "pytorch_lora_weights.safetensors"};
        for (size_t i = 0; i < SD_ARRAY_LEN(names) && !f->path; i++) {
            char *p = sd_path_join(path, names[i]);
            if (!p)
                return SD_ERR_OUT_OF_MEMORY;
            if (sd_file_exists(p))
                f->path = p;
            else
                free(p);
        }
        if (!f->path)
            return sd_fail(SD_ERR_NOT_FOUND, "%s: a folder without adapter_model.safetensors or "
                           "pytorch_lora_weights.safetensors; pass the LoRA .safetensors file", spec->path);
        cfg_path = sd_path_join(path, "adapter_config.json");
    } else {
        f->path = sd_strdup(spec->path);
        if (!f->path)
            return SD_ERR_OUT_OF_MEMORY;
        if (!sd_file_exists(spec->path))
            return sd_fail(SD_ERR_NOT_FOUND, "%s: no such LoRA file", spec->path);
        if (ends_with(spec->path, ".bin") || ends_with(spec->path, ".pt") || ends_with(spec->path, ".ckpt"))
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: a PyTorch pickle; streamdiff reads LoRAs from .safetensors only "
                           "(convert it, e.g. with safetensors.torch.save_file)", spec->path);
        const char *base = strrchr(spec->path, '/');
        base = base ? base + 1 : spec->path;
        if (!strcmp(base, "adapter_model.safetensors")) {
            char *d = dir_of(spec->path);
            cfg_path = d ? sd_path_join(d, "adapter_config.json") : NULL;
            free(d);
        }
    }
    sd_status s = sd_safetensors_open(f->path, &f->st);
    if (s != SD_OK) {
        free(cfg_path);
        return sd_fail_context(s, "LoRA");
    }
    /* PEFT adapter_config.json: applies to every component */
    if (cfg_path && sd_file_exists(cfg_path)) {
        s = load_json_file(cfg_path, &f->cfg_json[MAX_COMPS]);
        for (int c = 0; s == SD_OK && c < nt; c++)
            s = read_peft_cfg(f, f->cfg_json[MAX_COMPS], "", &f->cfg[c], "adapter_config.json");
    }
    free(cfg_path);
    SD_TRY(s);
    /* diffusers' lora_adapter_metadata: "<component>.<field>" */
    const char *meta = sd_st_meta(f->st, "lora_adapter_metadata");
    if (meta) {
        cJSON *j = cJSON_Parse(meta);
        if (!j || !cJSON_IsObject(j)) {
            cJSON_Delete(j);
            return sd_fail(SD_ERR_FORMAT, "%s: the lora_adapter_metadata entry is not a JSON object", f->label);
        }
        f->cfg_json[0] = j;
        for (int c = 0; c < nt && c < MAX_COMPS; c++) {
            char pre[64];
            snprintf(pre, sizeof pre, "%s.", tabs[c].c->name);
            bool any = false;
            const cJSON *e;
            cJSON_ArrayForEach(e, j) any = any || starts_with(e->string, pre);
            if (any)
                SD_TRY(read_peft_cfg(f, j, pre, &f->cfg[c], "lora_adapter_metadata"));
        }
    }
    return SD_OK;
}

/* ---------------------------------------------------------------- parsing */

static layer *get_layer(lora_file *f, int comp, int sl)
{
    for (size_t i = 0; i < f->n_layers; i++)
        if (f->layers[i].comp == comp && f->layers[i].slot == sl)
            return &f->layers[i];
    if (f->n_layers == f->cap_layers) {
        size_t nc = f->cap_layers ? 2 * f->cap_layers : 64;
        layer *nl = realloc(f->layers, nc * sizeof *nl);
        if (!nl) {
            sd_fail(SD_ERR_OUT_OF_MEMORY, "out of memory");
            return NULL;
        }
        f->layers = nl;
        f->cap_layers = nc;
    }
    layer *l = &f->layers[f->n_layers++];
    memset(l, 0, sizeof *l);
    l->comp = comp;
    l->slot = sl;
    return l;
}

static void shape_str(const int64_t *s, int n, char *buf, size_t cap)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ",%lld" : "%lld", (long long)s[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
}

static int squeeze(const int64_t *s, int n)
{
    while (n > 1 && s[n - 1] == 1)
        n--;
    return n;
}

static bool is_float(sd_dtype t) { return t == SD_F32 || t == SD_F16 || t == SD_BF16; }

static sd_status check_layer(const lora_file *f, const comp_table *tabs, const layer *l)
{
    const slot *sl = &tabs[l->comp].slots[l->slot];
    const sd_tensor *w = sl->t;
    char ws[96], ds[96];
    shape_str(w->ne, w->ndim, ws, sizeof ws);
    const sd_st_tensor *d = l->down, *u = l->up;
    if (!d || !u) {
        const sd_st_tensor *have = d ? d : u ? u : l->alpha;
        return sd_fail(SD_ERR_FORMAT, "%s: '%s' has no matching %s tensor (layer '%s')", f->label, have->name,
                       !d ? "down (lora_down / lora_A)" : "up (lora_up / lora_B)", sl->name);
    }
    const sd_st_tensor *ts[2] = {d, u};
    for (int i = 0; i < 2; i++) {
        if (!is_float(ts[i]->dtype))
            return sd_fail(SD_ERR_FORMAT, "%s: '%s' has dtype %s; LoRA weights are F32, F16 or BF16", f->label,
                           ts[i]->name, sd_dtype_name(ts[i]->dtype));
        if (ts[i]->ndim != 2 && ts[i]->ndim != 4) {
            shape_str(ts[i]->shape, ts[i]->ndim, ds, sizeof ds);
            return sd_fail(SD_ERR_SHAPE, "%s: '%s' has shape %s; a LoRA matrix is 2-D (linear) or 4-D (conv)",
                           f->label, ts[i]->name, ds);
        }
    }
    int64_t r = d->shape[0], O = w->ne[0];
    /* down [r, in...] must match the weight's [O, in...] after its first dim (trailing 1s ignored) */
    int wn = squeeze(w->ne, w->ndim), dn = squeeze(d->shape, d->ndim);
    bool ok = r > 0 && wn == dn;
    for (int i = 1; ok && i < wn; i++)
        ok = w->ne[i] == d->shape[i];
    if (!ok) {
        shape_str(d->shape, d->ndim, ds, sizeof ds);
        return sd_fail(SD_ERR_SHAPE, "%s: '%s' has shape %s, which does not fit layer '%s' of shape %s "
                       "(down must be [rank, in, ...kernel])", f->label, d->name, ds, sl->name, ws);
    }
    ok = u->shape[0] == O && u->shape[1] == r;
    if (ok && u->ndim == 4 && (u->shape[2] != 1 || u->shape[3] != 1)) {
        shape_str(u->shape, u->ndim, ds, sizeof ds);
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: '%s' has shape %s: an up convolution with a kernel larger than 1x1 "
                       "is not a LoRA/LoCon layer this build supports", f->label, u->name, ds);
    }
    if (!ok) {
        shape_str(u->shape, u->ndim, ds, sizeof ds);
        return sd_fail(SD_ERR_SHAPE, "%s: '%s' has shape %s but layer '%s' of shape %s with rank %lld needs "
                       "[%lld,%lld]", f->label, u->name, ds, sl->name, ws, (long long)r, (long long)O, (long long)r);
    }
    if (l->alpha) {
        if (l->alpha->numel != 1 || !is_float(l->alpha->dtype))
            return sd_fail(SD_ERR_FORMAT, "%s: '%s' must be one floating-point number", f->label, l->alpha->name);
        double a = sd_st_get(l->alpha, 0);
        if (!isfinite(a))
            return sd_fail(SD_ERR_FORMAT, "%s: '%s' is not finite", f->label, l->alpha->name);
    }
    int64_t K = sd_numel(w) / O;
    if (O > INT_MAX || K > INT_MAX || r > INT_MAX)
        return sd_fail(SD_ERR_UNSUPPORTED, "%s: layer '%s' is too large", f->label, sl->name);
    return SD_OK;
}

static sd_status parse_file(lora_file *f, const comp_table *tabs, int nt, const sd_lora_options *opt)
{
    const char *unmatched[UNMATCHED_SHOWN];
    const char *why_first = NULL;
    size_t n_unmatched = 0;
    for (size_t i = 0; i < f->st->n_tensors; i++) {
        const sd_st_tensor *t = &f->st->tensors[i];
        const char *what = variant_of(t->name);
        if (what)
            return sd_fail(SD_ERR_UNSUPPORTED, "%s: '%s' is a %s tensor; only LoRA/LoCon (lora_down/lora_up, "
                           "lora_A/lora_B) is supported", f->label, t->name, what);
        char mod[600];
        role r;
        bool procs;
        const char *why = "is not a LoRA tensor name (no lora_down/lora_up/lora_A/lora_B/alpha suffix)";
        int comp = -1, sl = -1;
        bool ok = split_key(t->name, mod, sizeof mod, &r, &procs) && resolve(tabs, nt, mod, procs, &comp, &sl, &why);
        if (!ok) {
            if (n_unmatched < UNMATCHED_SHOWN)
                unmatched[n_unmatched] = t->name;
            if (!why_first)
                why_first = why;
            n_unmatched++;
            continue;
        }
        layer *l = get_layer(f, comp, sl);
        if (!l)
            return SD_ERR_OUT_OF_MEMORY;
        const sd_st_tensor **dst = r == R_DOWN ? &l->down : r == R_UP ? &l->up : &l->alpha;
        if (*dst)
            return sd_fail(SD_ERR_FORMAT, "%s: '%s' and '%s' are both the %s of layer '%s'", f->label, (*dst)->name,
                           t->name, r == R_DOWN ? "down matrix" : r == R_UP ? "up matrix" : "alpha",
                           tabs[comp].slots[sl].name);
        *dst = t;
    }
    sd_status cs = SD_OK;
    for (size_t i = 0; cs == SD_OK && i < f->n_layers; i++)
        cs = check_layer(f, tabs, &f->layers[i]);
    /* a LoRA of another family: said first, before what does not fit */
    char why_fam[600], fam_note[900] = "";
    const char *fam = (cs != SD_OK || n_unmatched) ? sd_lora_family(f->st, why_fam, sizeof why_fam) : NULL;
    const char *model_fam = tabs[0].c->family;
    if (fam && model_fam && strcmp(fam, model_fam)) {
        snprintf(fam_note, sizeof fam_note, "an %s LoRA (%s) on an %s model, %zu of its %zu tensors match no layer "
                 "of it; use a LoRA made for %s", fam, why_fam, model_fam, n_unmatched, f->st->n_tensors, model_fam);
        if (cs != SD_OK)
            return sd_fail_context(cs, "%s: %s", f->label, fam_note);
    }
    SD_TRY(cs);
    if (n_unmatched) {
        char list[2048];
        size_t o = 0;
        list[0] = 0;
        for (size_t i = 0; i < n_unmatched && i < UNMATCHED_SHOWN && o < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s'%s'", i ? ", " : "", unmatched[i]);
        char more[64] = "";
        if (n_unmatched > UNMATCHED_SHOWN)
            snprintf(more, sizeof more, " and %zu more", n_unmatched - UNMATCHED_SHOWN);
        if (!opt || !opt->allow_unmatched)
            return sd_fail(SD_ERR_NOT_FOUND,
                           "%s: %s%s%zu LoRA tensor(s) match no layer of this model: %s%s (the first %s; a LoRA for "
                           "another architecture? allow_unmatched (sd_lora_options) skips them)",
                           f->label, fam_note, *fam_note ? ": " : "", n_unmatched, list, more, why_first);
        fprintf(stderr, "streamdiff: warning: %s: %zu LoRA tensor(s) match no layer and are ignored: %s%s%s\n",
                f->label, n_unmatched, list, more, f->n_layers ? "" : " (nothing of this LoRA is used)");
    }
    return SD_OK;
}

/* Alpha of a parsed layer (see lora.h). */
static sd_status layer_coef(const lora_file *f, const comp_table *tabs, const layer *l, double *coef)
{
    double r = (double)l->down->shape[0];
    double alpha = r;
    bool rslora = false;
    if (l->alpha) {
        alpha = sd_st_get(l->alpha, 0);
        if (alpha == 0)
            alpha = r; /* kohya / A1111: alpha 0 or absent means rank */
    } else if (l->comp < MAX_COMPS && f->cfg[l->comp].present) {
        const peft_cfg *c = &f->cfg[l->comp];
        const char *name = tabs[l->comp].slots[l->slot].name;
        char mod[600];
        size_t ml = strlen(name) - strlen(".weight");
        if (ml >= sizeof mod)
            ml = sizeof mod - 1;
        memcpy(mod, name, ml);
        mod[ml] = 0;
        SD_TRY(peft_alpha(f, c, mod, r, &alpha));
        rslora = c->rslora;
    }
    *coef = (double)f->scale * alpha / (rslora ? sqrt(r) : r);
    return SD_OK;
}

/* ================================================================== fusing */

typedef struct fused {
    sd_weights *w;
    char *name;
    sd_tensor *t;
} fused;

struct sd_lora_state {
    fused *v;
    size_t n;
    int n_loras; /* LoRAs in the set that fused v */
};

void sd_lora_state_free(sd_lora_state *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].name);
    free(s->v);
    free(s);
}

size_t sd_lora_state_count(const sd_lora_state *s) { return s ? s->n : 0; }
int sd_lora_state_loras(const sd_lora_state *s) { return s ? s->n_loras : 0; }

typedef struct contrib {
    int comp, slot;
    int file;
    size_t layer;
} contrib;

static int cmp_contrib(const void *a, const void *b)
{
    const contrib *x = a, *y = b;
    if (x->comp != y->comp)
        return x->comp < y->comp ? -1 : 1;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->layer < y->layer ? -1 : x->layer > y->layer;
}

/* W = base + sum of the group's contributions, written into the handle. */
static sd_status fuse_group(const comp_table *tabs, const lora_file *files, const contrib *g, size_t ng)
{
    const comp_table *ct = &tabs[g[0].comp];
    const slot *sl = &ct->slots[g[0].slot];
    sd_tensor *t = sl->t;
    int64_t O = t->ne[0], K = sd_numel(t) / O;
    float *W = sd_malloc((size_t)O * (size_t)K * sizeof(float));
    if (!W)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s = sd_weights_read_f32(ct->c->w, sl->name, t, W);
    for (size_t i = 0; i < ng && s == SD_OK; i++) {
        const lora_file *f = &files[g[i].file];
        const layer *l = &f->layers[g[i].layer];
        double coef;
        s = layer_coef(f, tabs, l, &coef);
        if (s != SD_OK)
            break;
        int64_t r = l->down->shape[0];
        float *A = sd_malloc(l->down->numel * sizeof(float));
        float *B = sd_malloc(l->up->numel * sizeof(float));
        if (A && B) {
            sd_st_to_f32(l->down, A);
            sd_st_to_f32(l->up, B);
            /* W[O,K] += coef * B[O,r] @ A[r,K] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)K, (int)r, (float)coef, B, (int)r, A,
                        (int)K, 1.0f, W, (int)K);
        } else {
            s = SD_ERR_OUT_OF_MEMORY;
        }
        free(A);
        free(B);
    }
    if (s == SD_OK)
        s = sd_weights_write_f32(ct->c->w, sl->name, t, W);
    free(W);
    return s;
}

static bool in_list(const fused *v, size_t n, const sd_tensor *t)
{
    for (size_t i = 0; i < n; i++)
        if (v[i].t == t)
            return true;
    return false;
}

sd_status sd_lora_apply(sd_lora_state **state, const sd_lora_component *comps, int n_comps,
                        const sd_lora_spec *loras, int n, const sd_lora_options *opt)
{
    if (!state || !comps || n_comps < 1 || n_comps > MAX_COMPS)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "LoRA: invalid model components");
    if (n < 0 || n > SD_LORA_MAX_FILES || (n > 0 && !loras))
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "LoRA: %d LoRAs given; 0 to %d are possible", n, SD_LORA_MAX_FILES);
    for (int i = 0; i < n; i++) {
        if (!loras[i].path || !*loras[i].path)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "LoRA %d: no path given", i + 1);
        if (!isfinite(loras[i].scale) || fabsf(loras[i].scale) > 1000.0f)
            return sd_fail(SD_ERR_INVALID_ARGUMENT, "%s: LoRA scale %g is not a finite number in -1000..1000",
                           loras[i].path, (double)loras[i].scale);
    }
    comp_table tabs[MAX_COMPS];
    memset(tabs, 0, sizeof tabs);
    lora_file *files = sd_calloc((size_t)(n ? n : 1), sizeof *files);
    contrib *cs = NULL;
    fused *nv = NULL;
    size_t nn = 0;
    sd_status s = files ? SD_OK : SD_ERR_OUT_OF_MEMORY;

    /* 1. read and check everything: no weight changes before this succeeds */
    for (int c = 0; s == SD_OK && c < n_comps; c++)
        s = table_build(&tabs[c], &comps[c]);
    for (int i = 0; s == SD_OK && i < n; i++) {
        s = file_open(&files[i], &loras[i], tabs, n_comps);
        if (s == SD_OK)
            s = parse_file(&files[i], tabs, n_comps, opt);
    }
    size_t ncs = 0;
    if (s == SD_OK) {
        size_t total = 0;
        for (int i = 0; i < n; i++)
            total += loras[i].scale != 0.0f ? files[i].n_layers : 0;
        cs = sd_calloc(total ? total : 1, sizeof *cs);
        nv = sd_calloc(total ? total : 1, sizeof *nv);
        if (!cs || !nv)
            s = SD_ERR_OUT_OF_MEMORY;
        for (int i = 0; s == SD_OK && i < n; i++)
            for (size_t j = 0; loras[i].scale != 0.0f && j < files[i].n_layers; j++)
                cs[ncs++] = (contrib){files[i].layers[j].comp, files[i].layers[j].slot, i, j};
        if (ncs)
            qsort(cs, ncs, sizeof *cs, cmp_contrib);
        for (size_t i = 0; s == SD_OK && i < ncs; i++) {
            if (i && cs[i].comp == cs[i - 1].comp && cs[i].slot == cs[i - 1].slot)
                continue;
            const comp_table *ct = &tabs[cs[i].comp];
            char *name = sd_strdup(ct->slots[cs[i].slot].name);
            if (!name) {
                s = SD_ERR_OUT_OF_MEMORY;
                break;
            }
            nv[nn++] = (fused){ct->c->w, name, ct->slots[cs[i].slot].t};
        }
    }

    /* 2. restore what the old set fused and the new one does not; fuse the new set from the base */
    sd_lora_state *old = *state;
    for (int c = 0; s == SD_OK && c < n_comps; c++) /* nothing may still be reading the weights */
        s = comps[c].w->be->ops->synchronize ? comps[c].w->be->ops->synchronize(comps[c].w->be) : SD_OK;
    if (s == SD_OK) {
        for (size_t i = 0; old && i < old->n; i++)
            if (!in_list(nv, nn, old->v[i].t)) {
                sd_status r = sd_weights_restore(old->v[i].w, old->v[i].name, old->v[i].t);
                if (s == SD_OK)
                    s = r;
            }
        for (size_t i = 0; s == SD_OK && i < ncs;) {
            size_t j = i + 1;
            while (j < ncs && cs[j].comp == cs[i].comp && cs[j].slot == cs[i].slot)
                j++;
            s = fuse_group(tabs, files, cs + i, j - i);
            i = j;
        }
        if (s != SD_OK) { /* back to the base weights everywhere */
            for (size_t i = 0; old && i < old->n; i++)
                sd_weights_restore(old->v[i].w, old->v[i].name, old->v[i].t);
            for (size_t i = 0; i < nn; i++)
                sd_weights_restore(nv[i].w, nv[i].name, nv[i].t);
            sd_lora_state_free(old);
            *state = NULL;
        } else {
            sd_lora_state *ns = nn ? sd_calloc(1, sizeof *ns) : NULL;
            if (nn && !ns) {
                /* cannot record: undo so that the record (none) is true */
                for (size_t i = 0; i < nn; i++)
                    sd_weights_restore(nv[i].w, nv[i].name, nv[i].t);
                s = SD_ERR_OUT_OF_MEMORY;
            } else if (ns) {
                ns->v = nv;
                ns->n = nn;
                ns->n_loras = n;
                nv = NULL;
                nn = 0;
            }
            sd_lora_state_free(old);
            *state = ns;
        }
    }

    for (int c = 0; c < n_comps; c++) { /* the uploads are complete before the weights are used */
        sd_status ss = comps[c].w->be->ops->synchronize ? comps[c].w->be->ops->synchronize(comps[c].w->be) : SD_OK;
        if (s == SD_OK)
            s = ss;
    }
    for (size_t i = 0; i < nn; i++)
        free(nv[i].name);
    free(nv);
    free(cs);
    for (int i = 0; files && i < n; i++)
        file_free(&files[i]);
    free(files);
    for (int c = 0; c < n_comps; c++)
        table_free(&tabs[c]);
    return s;
}
