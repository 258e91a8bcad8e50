/* Loading a model from where users keep it: diffusers folders, single-file
 * checkpoints, Hugging Face cache ids. */
#include "pipe/model.h"

#include "models/checkpoint.h"
#include "models/hfcache.h"
#include "models/lora.h"
#include "backend/cpu/cpu_kern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sd_model_default_params(sd_model_params *p)
{
    memset(p, 0, sizeof *p);
    p->backend = SD_BACKEND_CPU;
}

sd_dtype sd_model_weight_dtype(const sd_backend *be, const sd_model_params *p)
{
    if (be->act_dtype == SD_F16)
        return SD_F16;
    if (be->bf16) /* precision bf16: the weight layout of the bf16 kernels (backend.h) */
        return SD_BF16;
    return p->keep_f16 ? SD_F16 : SD_F32;
}

bool sd_precision_from_name(const char *name, sd_precision *out)
{
    static const char *const names[] = {"fp32", "bf16", "int8", "auto"};
    for (int i = 0; name && i < 4; i++)
        if (!strcmp(name, names[i])) {
            *out = (sd_precision)i;
            return true;
        }
    return false;
}

const char *sd_precision_name(sd_precision p)
{
    static const char *const names[] = {"fp32", "bf16", "int8", "auto"};
    return (unsigned)p < 4 ? names[p] : "?";
}

/* The precision on the backend: bf16 on the CPU (its bf16 kernels, or bf16 storage with fp32 compute
 * where it has none), int8 (its int8 kernels for linears and convolutions, the rest as bf16; bf16
 * where it has none), auto = bf16 where the CPU's bf16 kernels outpace its fp32 ones (sd_backend_cpu_auto_bf16). */
static sd_status apply_precision(const sd_model_params *p, sd_backend *be)
{
    bool cuda = p->backend == SD_BACKEND_CUDA;
    switch (p->precision) {
    case SD_PRECISION_FP32: return SD_OK;
    case SD_PRECISION_AUTO:
        if (!cuda && sd_backend_cpu_auto_bf16(be))
            sd_backend_cpu_set_bf16(be, true);
        return SD_OK;
    case SD_PRECISION_BF16:
        if (cuda)
            return sd_fail(SD_ERR_UNSUPPORTED, "precision bf16 is for the CPU backend (CUDA computes in fp16): use "
                                               "precision fp32 or auto with CUDA");
        sd_backend_cpu_set_bf16(be, true);
        return SD_OK;
    case SD_PRECISION_INT8: /* experimental: W8A8 linears and convolutions, the rest as bf16 */
        if (cuda)
            return sd_fail(SD_ERR_UNSUPPORTED, "precision int8 is for the CPU backend: use precision fp32 or auto "
                                               "with CUDA");
        sd_backend_cpu_set_int8(be, true);
        if (!sd_backend_cpu_int8_isa(be))
            fprintf(stderr, "streamdiff: warning: precision int8 needs AMX-INT8 or AVX512-VNNI, which this CPU "
                            "(or SD_CPU_ISA=%s) lacks: running as precision bf16\n", sd_backend_cpu_isa(be));
        return SD_OK;
    }
    return sd_fail(SD_ERR_INVALID_ARGUMENT, "unknown precision %d (use fp32, bf16, int8 or auto)", (int)p->precision);
}

static sd_status create_backend(const sd_model_params *p, sd_backend **be)
{
    sd_status s;
    if (p->backend == SD_BACKEND_CUDA)
        s = sd_backend_cuda_create(p->cuda_device, be);
    else if (p->backend != SD_BACKEND_CPU)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "unknown backend %d (use SD_BACKEND_CPU or SD_BACKEND_CUDA)",
                       (int)p->backend);
    else
        s = sd_backend_cpu_create(p->n_threads, be);
    if (s == SD_OK && (s = apply_precision(p, *be)) != SD_OK) {
        sd_backend_destroy(*be);
        *be = NULL;
    }
    return s;
}

static sd_model *model_new(const sd_model_params *p, sd_status *s)
{
    sd_model *m = sd_calloc(1, sizeof *m);
    if (!m) {
        *s = SD_ERR_OUT_OF_MEMORY;
        return NULL;
    }
    if (p)
        m->params = *p;
    else
        sd_model_default_params(&m->params);
    *s = create_backend(&m->params, &m->be);
    if (*s != SD_OK) {
        free(m);
        return NULL;
    }
    m->tok_mode = SD_TOK_CLEAN_FTFY;
    m->arch = "sd1";
    return m;
}

void sd_model_free(sd_model *m)
{
    if (!m)
        return;
    sd_lora_state_free(m->lora);
    sd_clip_free(m->clip);
    sd_unet_free(m->unet);
    sd_vae_free(m->vae);
    sd_taesd_free(m->taesd);
    sd_tokenizer_free(m->tok);
    sd_weights_free(&m->w_text);
    sd_weights_free(&m->w_vae);
    sd_weights_free(&m->w_taesd);
    sd_weights_free(&m->w_unet);
    sd_sdxl_free(m);
    sd_backend_destroy(m->be);
    free(m->source);
    free(m);
}

static char *join(const char *a, const char *b) { return sd_path_join(a, b); }

/* Loads <dir>/<sub>/config.json into `cfg` via `fn`. */
#define LOAD_CONFIG(fn, dir, cfgp)                                   \
    do {                                                             \
        char *cp_ = join((dir), "config.json");                      \
        s = cp_ ? fn(cp_, (cfgp)) : SD_ERR_OUT_OF_MEMORY;            \
        free(cp_);                                                   \
    } while (0)

static sd_status load_component(sd_model *m, sd_weights *w, const char *dir, const char *what, const char *base)
{
    char label[600];
    snprintf(label, sizeof label, "%s (%s)", what, dir);
    sd_weights_init(w, m->be, label, sd_model_weight_dtype(m->be, &m->params));
    w->check_finite = m->params.check_finite;
    SD_TRY(sd_weights_add_component(w, dir, base, m->params.variant, NULL));
    return sd_weights_finalize(w);
}

sd_status sd_model_load_component(sd_model *m, sd_weights *w, const char *dir, const char *what, const char *base)
{
    return load_component(m, w, dir, what, base);
}

sd_status sd_model_load_taesd(sd_model *m, const char *path)
{
    char *resolved = NULL;
    const char *dir = path;
    if (!sd_dir_exists(path) && sd_looks_like_hf_id(path)) {
        SD_TRY(sd_hf_resolve(path, NULL, &resolved));
        dir = resolved;
    }
    if (!sd_dir_exists(dir)) {
        free(resolved);
        return sd_fail(SD_ERR_NOT_FOUND, "TAESD '%s': not a folder (expected config.json + "
                                         "diffusion_pytorch_model.safetensors, e.g. madebyollin/taesd)", path);
    }
    sd_status s;
    LOAD_CONFIG(sd_taesd_config_load, dir, &m->taesd_cfg);
    if (s == SD_OK)
        s = load_component(m, &m->w_taesd, dir, "taesd", "diffusion_pytorch_model");
    if (s == SD_OK)
        s = sd_taesd_load(&m->w_taesd, &m->taesd_cfg, &m->taesd);
    free(resolved);
    return s;
}

static sd_status load_scheduler(sd_model *m, const char *dir)
{
    char *sd = join(dir, "scheduler/scheduler_config.json");
    if (!sd)
        return SD_ERR_OUT_OF_MEMORY;
    sd_status s;
    if (sd_file_exists(sd)) {
        s = sd_sched_config_load(sd, &m->sched_cfg);
        sd_config c;
        if (s == SD_OK && sd_config_load(sd, &c) == SD_OK) {
            const char *cls = NULL;
            sd_config_str(&c, "_class_name", "?", &cls);
            snprintf(m->sched_class, sizeof m->sched_class, "%s", cls);
            sd_config_free(&c);
        } else if (s == SD_ERR_UNSUPPORTED) {
            /* a class this build lacks (SD1.5 folders ship PNDMScheduler): like the folder-less default,
             * the file's schedule runs as DPMSolverMultistepScheduler.from_config(file) */
            s = sd_sched_config_load_as(sd, SD_SCHED_DPMPP_2M, &m->sched_cfg);
            if (s == SD_OK && sd_config_load(sd, &c) == SD_OK) {
                const char *cls = NULL;
                sd_config_str(&c, "_class_name", "?", &cls);
                fprintf(stderr, "streamdiff: note: %s: %s is not supported; its schedule runs as "
                                "DPMSolverMultistepScheduler (choose another with the sampler option)\n", sd, cls);
                sd_config_free(&c);
            }
            if (s == SD_OK)
                snprintf(m->sched_class, sizeof m->sched_class, "DPMSolverMultistepScheduler");
        }
    } else { /* no scheduler folder: SD's PNDM defaults run as DPM-Solver++ */
        sd_sched_config_default(&m->sched_cfg, SD_SCHED_DPMPP_2M);
        snprintf(m->sched_class, sizeof m->sched_class, "DPMSolverMultistepScheduler");
        s = SD_OK;
    }
    if (s == SD_OK) { /* a config the scheduler refuses (e.g. beta_end 2) fails the load, not every generation */
        sd_scheduler *check = NULL;
        s = sd_scheduler_create(&m->sched_cfg, &check);
        sd_scheduler_free(check);
        if (s != SD_OK)
            sd_fail_context(s, "%s", sd);
    }
    free(sd);
    return s;
}

/* vae/config.json names an AutoencoderTiny (a missing or unreadable config is left to the AutoencoderKL loader,
 * which reports it) */
static bool vae_is_tiny(const char *vae_dir)
{
    char *cp = join(vae_dir, "config.json");
    sd_config c;
    bool tiny = false;
    if (cp && sd_file_exists(cp) && sd_config_load(cp, &c) == SD_OK) {
        const char *cls = NULL;
        tiny = sd_config_str(&c, "_class_name", "", &cls) == SD_OK && cls && !strcmp(cls, "AutoencoderTiny");
        sd_config_free(&c);
    }
    free(cp);
    return tiny;
}

bool sd_model_use_taesd(const sd_model *m, bool requested)
{
    return m->taesd && (requested || !m->vae);
}

sd_status sd_model_load_folder(const char *dir, const char *unet_dir, const sd_model_params *p, sd_model **out)
{
    *out = NULL;
    sd_status s;
    sd_model *m = model_new(p, &s);
    if (!m)
        return s;
    m->source = sd_strdup(dir);
    char *tok = join(dir, "tokenizer"), *te = join(dir, "text_encoder"), *un = unet_dir ? sd_strdup(unet_dir) : join(dir, "unet"),
         *va = join(dir, "vae");
    if (!tok || !te || !un || !va || !m->source) {
        s = SD_ERR_OUT_OF_MEMORY;
        goto done;
    }
    if (!sd_dir_exists(un)) {
        s = sd_fail(SD_ERR_NOT_FOUND, "%s: no unet/ folder: not a Stable Diffusion model folder (expected "
                                      "model_index.json with tokenizer/, text_encoder/, unet/, vae/, scheduler/)", dir);
        goto done;
    }
    bool sdxl = false; /* before the text encoder: an SDXL refiner has none, and is refused by name */
    if ((s = sd_sdxl_check_folder(dir, un, &sdxl)) != SD_OK)
        goto done;
    if (!sd_dir_exists(te)) {
        s = sd_fail(SD_ERR_NOT_FOUND, "%s: no text_encoder/ folder: a Stable Diffusion model folder needs the CLIP "
                                      "text encoder (config.json + model.safetensors)", dir);
        goto done;
    }
    if ((s = sd_tokenizer_load(tok, &m->tok)) != SD_OK)
        goto done;
    LOAD_CONFIG(sd_clip_config_load, te, &m->clip_cfg);
    if (s != SD_OK || (s = load_component(m, &m->w_text, te, "text_encoder", "model")) != SD_OK ||
        (s = sd_clip_load(&m->w_text, &m->clip_cfg, &m->clip)) != SD_OK)
        goto done;
    if (sdxl && (s = sd_sdxl_load_folder(m, dir)) != SD_OK)
        goto done;
    LOAD_CONFIG(sd_unet_config_load, un, &m->unet_cfg);
    if (s != SD_OK || (s = load_component(m, &m->w_unet, un, "unet", "diffusion_pytorch_model")) != SD_OK ||
        (s = sd_unet_load(&m->w_unet, &m->unet_cfg, &m->unet)) != SD_OK)
        goto done;
    if (sd_dir_exists(va) && vae_is_tiny(va)) {
        if (!m->params.taesd && (s = sd_model_load_taesd(m, va)) != SD_OK)
            goto done;
    } else if (sd_dir_exists(va)) {
        LOAD_CONFIG(sd_vae_config_load, va, &m->vae_cfg);
        if (s != SD_OK || (s = load_component(m, &m->w_vae, va, "vae", "diffusion_pytorch_model")) != SD_OK ||
            (s = sd_vae_load(&m->w_vae, &m->vae_cfg, &m->vae)) != SD_OK)
            goto done;
    }
    if ((s = load_scheduler(m, dir)) != SD_OK)
        goto done;
    if (!m->sdxl)
        m->arch = m->unet_cfg.use_linear_projection ? "sd2" : "sd1";
    if ((s = sd_model_check_fit(m)) != SD_OK)
        goto done;
    if (m->params.taesd)
        s = sd_model_load_taesd(m, m->params.taesd);
done:
    free(tok);
    free(te);
    free(un);
    free(va);
    if (s != SD_OK) {
        sd_model_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

/* A diffusers folder given as a name or HF id (for config_dir / taesd). */
static sd_status resolve_dir(const char *path, const char *revision, char **dir)
{
    if (sd_dir_exists(path))
        return (*dir = sd_strdup(path)) ? SD_OK : SD_ERR_OUT_OF_MEMORY;
    if (sd_looks_like_hf_id(path))
        return sd_hf_resolve(path, revision, dir);
    return sd_fail(SD_ERR_NOT_FOUND, "'%s' is not a folder nor a Hugging Face model id in the local cache", path);
}

/* The CLIP BPE files for a single-file checkpoint: the config folder's <sub>/ ("tokenizer", or SDXL's
 * "tokenizer_2" that pads with "!"), else a known repository in the local HF cache. */
static sd_status find_tokenizer(const char *config_dir, bool sdxl, const char *sub_dir, sd_tokenizer **tok)
{
    if (config_dir) {
        char *t = sd_path_join(config_dir, sub_dir);
        sd_status s = t ? sd_tokenizer_load(t, tok) : SD_ERR_OUT_OF_MEMORY;
        free(t);
        return s;
    }
    static const char *const sd_ids[] = {"openai/clip-vit-large-patch14",
                                         "stable-diffusion-v1-5/stable-diffusion-v1-5",
                                         "runwayml/stable-diffusion-v1-5", "stabilityai/sd-turbo",
                                         "stabilityai/stable-diffusion-2-1", "SimianLuo/LCM_Dreamshaper_v7"};
    static const char *const xl_ids[] = {"stabilityai/sdxl-turbo", "stabilityai/stable-diffusion-xl-base-1.0",
                                         "segmind/SSD-1B", "segmind/Segmind-Vega"};
    const char *const *ids = sdxl ? xl_ids : sd_ids;
    size_t n_ids = sdxl ? SD_ARRAY_LEN(xl_ids) : SD_ARRAY_LEN(sd_ids);
    for (size_t i = 0; i < n_ids; i++) {
        char *snap = NULL;
        if (sd_hf_resolve(ids[i], NULL, &snap) != SD_OK)
            continue;
        for (int sub = sdxl ? 1 : 0; sub < 2; sub++) { /* an SDXL repository: only its <sub_dir>/ */
            char *t = sub ? sd_path_join(snap, sub_dir) : sd_strdup(snap);
            char *v = t ? sd_path_join(t, "vocab.json") : NULL;
            sd_status s = (v && sd_file_exists(v)) ? sd_tokenizer_load(t, tok) : SD_ERR_NOT_FOUND;
            free(v);
            free(t);
            if (s == SD_OK) {
                free(snap);
                return SD_OK;
            }
        }
        free(snap);
    }
    if (sdxl)
        return sd_fail(SD_ERR_NOT_FOUND,
                       "an SDXL single-file checkpoint has no tokenizers: set config_dir (sd_model_params) to an SDXL "
                       "diffusers folder (its tokenizer/ and tokenizer_2/ are used), or have stabilityai/sdxl-turbo "
                       "or stabilityai/stable-diffusion-xl-base-1.0 in your HF cache (%s/ was looked for)", sub_dir);
    return sd_fail(SD_ERR_NOT_FOUND,
                   "a single-file checkpoint has no tokenizer: set config_dir (sd_model_params) to a diffusers folder of "
                   "the same architecture (its tokenizer/ is used), or have openai/clip-vit-large-patch14 in your HF "
                   "cache");
}

static sd_status config_from_json(cJSON *json, const char *label, sd_config *c)
{
    memset(c, 0, sizeof *c);
    if (!json)
        return sd_fail(SD_ERR_FORMAT, "%s: cannot derive a config from the checkpoint's tensors", label);
    c->root = json;
    c->path = label;
    c->owner = true;
    return SD_OK;
}

sd_status sd_model_load_single_file(const char *path, const sd_model_params *p, sd_model **out)
{
    *out = NULL;
    sd_status s;
    sd_model *m = model_new(p, &s);
    if (!m)
        return s;
    char *cfgdir = NULL, *sub = NULL;
    sd_safetensors *st = NULL;
    sd_ckpt_info info;
    memset(&info, 0, sizeof info);
    m->source = sd_strdup(path);
    if ((s = sd_safetensors_open(path, &st)) != SD_OK) {
        /* a PyTorch pickle (.ckpt/.pt/.bin: a zip archive or a raw pickle) is refused by name: pickles can run
         * code, and "[header-too-large]" would not tell the user what is wrong */
        sd_mmap mm;
        if (s == SD_ERR_FORMAT && sd_mmap_open(path, &mm) == SD_OK) {
            const uint8_t *b = mm.data;
            bool pickle = mm.size >= 4 && ((b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) ||
                                           (b[0] == 0x80 && b[1] >= 2 && b[1] <= 5));
            sd_mmap_close(&mm);
            if (pickle)
                s = sd_fail(SD_ERR_UNSUPPORTED, "%s: this is a PyTorch pickle checkpoint (.ckpt/.pt/.bin), not "
                            ".safetensors; streamdiff never loads pickles (they can run code): convert it to "
                            ".safetensors first", path);
        }
        goto done;
    }
    sd_arch arch;
    if ((s = sd_ckpt_detect(st, &arch)) != SD_OK)
        goto done;
    bool xl = arch == SD_ARCH_SDXL;
    if (xl && (s = sd_ckpt_sdxl_check(st)) != SD_OK) /* a refiner, by name */
        goto done;
    m->arch = xl ? "sdxl" : arch == SD_ARCH_SD2 ? "sd2" : "sd1";
    if (m->params.config_dir && (s = resolve_dir(m->params.config_dir, m->params.revision, &cfgdir)) != SD_OK)
        goto done;
    /* configs */
    if (cfgdir) {
        sub = sd_path_join(cfgdir, "text_encoder");
        LOAD_CONFIG(sd_clip_config_load, sub, &m->clip_cfg);
        free(sub);
        sub = xl ? sd_path_join(cfgdir, "text_encoder_2") : NULL;
        if (s == SD_OK && xl)
            LOAD_CONFIG(sd_clip_config_load, sub, &m->clip2_cfg);
        free(sub);
        sub = sd_path_join(cfgdir, "unet");
        if (s == SD_OK)
            LOAD_CONFIG(sd_unet_config_load, sub, &m->unet_cfg);
        free(sub);
        sub = sd_path_join(cfgdir, "vae");
        if (s == SD_OK)
            LOAD_CONFIG(sd_vae_config_load, sub, &m->vae_cfg);
        free(sub);
        sub = NULL;
        if (s == SD_OK)
            s = load_scheduler(m, cfgdir);
    } else {
        sd_config c;
        if ((s = config_from_json(sd_ckpt_text_config(st, arch), path, &c)) == SD_OK) {
            s = sd_clip_config_from(&c, &m->clip_cfg);
            sd_config_free(&c);
        }
        if (s == SD_OK && xl && (s = config_from_json(sd_ckpt_text2_config(st, arch), path, &c)) == SD_OK) {
            s = sd_clip_config_from(&c, &m->clip2_cfg);
            sd_config_free(&c);
        }
        if (s == SD_OK && (s = config_from_json(sd_ckpt_unet_config(st, arch), path, &c)) == SD_OK) {
            s = sd_unet_config_from(&c, &m->unet_cfg);
            sd_config_free(&c);
        }
        if (s == SD_OK && (s = config_from_json(sd_ckpt_vae_config(st, arch), path, &c)) == SD_OK) {
            s = sd_vae_config_from(&c, &m->vae_cfg);
            sd_config_free(&c);
        }
        if (s == SD_OK && (s = config_from_json(sd_ckpt_scheduler_config(st, arch), path, &c)) == SD_OK) {
            s = sd_sched_config_from_json(&c, -1, &m->sched_cfg);
            const char *cls = NULL;
            sd_config_str(&c, "_class_name", "?", &cls);
            if (s == SD_ERR_UNSUPPORTED) { /* SD1's PNDMScheduler: run as DPM-Solver++, like a folder without one */
                s = sd_sched_config_from_json(&c, SD_SCHED_DPMPP_2M, &m->sched_cfg);
                cls = "DPMSolverMultistepScheduler";
            }
            snprintf(m->sched_class, sizeof m->sched_class, "%s", cls);
            sd_config_free(&c);
        }
    }
    if (s != SD_OK)
        goto done;
    /* SD pipelines use last_hidden_state only; single files' OpenCLIP projection is not mapped (as diffusers) */
    m->clip_cfg.with_projection = false;
    m->clip2_cfg.with_projection = xl; /* SDXL's pooled embedding is text_projection's output */
    /* weights */
    sd_dtype wdt = sd_model_weight_dtype(m->be, &m->params);
    char label[600];
    snprintf(label, sizeof label, "unet (%s)", path);
    sd_weights_init(&m->w_unet, m->be, label, wdt);
    snprintf(label, sizeof label, "vae (%s)", path);
    sd_weights_init(&m->w_vae, m->be, label, wdt);
    snprintf(label, sizeof label, "text_encoder (%s)", path);
    sd_weights_init(&m->w_text, m->be, label, wdt);
    snprintf(label, sizeof label, "text_encoder_2 (%s)", path);
    sd_weights_init(&m->w_text2, m->be, label, wdt);
    m->w_unet.check_finite = m->w_vae.check_finite = m->w_text.check_finite = m->params.check_finite;
    m->w_text2.check_finite = m->params.check_finite;
    sd_weights *const ws[SD_CKPT_COMPONENTS] = {&m->w_unet, &m->w_vae, &m->w_text, xl ? &m->w_text2 : NULL};
    if ((s = sd_ckpt_load_all(path, ws, &info)) != SD_OK)
        goto done;
    if (info.n_unknown) {
        fprintf(stderr, "streamdiff: warning: %s: %zu tensor(s) match no layer and are ignored, e.g. '%s'\n", path,
                info.n_unknown, info.unknown[0]);
    }
    if ((s = sd_clip_load(&m->w_text, &m->clip_cfg, &m->clip)) != SD_OK ||
        (xl && (s = sd_clip_load(&m->w_text2, &m->clip2_cfg, &m->clip2)) != SD_OK) ||
        (s = sd_unet_load(&m->w_unet, &m->unet_cfg, &m->unet)) != SD_OK ||
        (s = sd_vae_load(&m->w_vae, &m->vae_cfg, &m->vae)) != SD_OK)
        goto done;
    if ((s = find_tokenizer(cfgdir, xl, "tokenizer", &m->tok)) != SD_OK ||
        (xl && (s = find_tokenizer(cfgdir, xl, "tokenizer_2", &m->tok2)) != SD_OK))
        goto done;
    if (xl) {
        m->sdxl = true;
        m->force_zeros_for_empty_prompt = true; /* StableDiffusionXLPipeline.from_single_file's default */
        if ((s = sd_model_check_fit(m)) != SD_OK)
            goto done;
    }
    if (!cfgdir) {
        bool known = false;
        const char *pt = sd_ckpt_prediction_type(st, arch, &known);
        if (pt && known)
            m->sched_cfg.prediction_type = !strcmp(pt, "v_prediction") ? SD_PRED_V_PREDICTION : SD_PRED_EPSILON;
        else if (arch == SD_ARCH_SD2 && !m->params.prediction_type)
            fprintf(stderr, "streamdiff: note: %s: an SD2 checkpoint does not say whether it predicts epsilon or "
                            "v; assuming v_prediction (SD 2.x 768). For sd-turbo or SD 2.x-base set "
                            "prediction_type (sd_model_params) to \"epsilon\"\n", path);
    }
    if (m->params.taesd)
        s = sd_model_load_taesd(m, m->params.taesd);
done:
    sd_ckpt_info_free(&info);
    sd_safetensors_close(st);
    free(cfgdir);
    if (s != SD_OK) {
        sd_model_free(m);
        return s;
    }
    *out = m;
    return SD_OK;
}

static sd_status apply_overrides(sd_model *m)
{
    const char *pt = m->params.prediction_type;
    if (!pt)
        return SD_OK;
    if (!strcmp(pt, "epsilon"))
        m->sched_cfg.prediction_type = SD_PRED_EPSILON;
    else if (!strcmp(pt, "v_prediction") || !strcmp(pt, "v"))
        m->sched_cfg.prediction_type = SD_PRED_V_PREDICTION;
    else
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "unknown prediction type '%s' (use epsilon or v_prediction)", pt);
    return SD_OK;
}

static sd_status load_any(const char *path, const sd_model_params *p, sd_model **out)
{
    *out = NULL;
    if (!path || !*path)
        return sd_fail(SD_ERR_INVALID_ARGUMENT, "no model given: pass a diffusers folder, a .safetensors "
                                                "checkpoint or a Hugging Face model id from your local cache");
    if (sd_dir_exists(path))
        return sd_model_load_folder(path, NULL, p, out);
    if (sd_file_exists(path))
        return sd_model_load_single_file(path, p, out);
    if (sd_looks_like_hf_id(path)) {
        char *snap = NULL;
        SD_TRY(sd_hf_resolve(path, p ? p->revision : NULL, &snap));
        sd_status s = sd_model_load_folder(snap, NULL, p, out);
        free(snap);
        return s;
    }
    return sd_fail(SD_ERR_NOT_FOUND, "model '%s' not found: not a folder, not a file, and not a Hugging Face "
                                     "model id (org/name)", path);
}

sd_status sd_model_load(const char *path, const sd_model_params *p, sd_model **out)
{
    SD_TRY(load_any(path, p, out));
    sd_status s = apply_overrides(*out);
    if (s == SD_OK) { /* converted weights: the file pages need not stay resident */
        sd_weights_release_pages(&(*out)->w_text);
        sd_weights_release_pages(&(*out)->w_text2);
        sd_weights_release_pages(&(*out)->w_unet);
        sd_weights_release_pages(&(*out)->w_vae);
        sd_weights_release_pages(&(*out)->w_taesd);
    }
    if (s != SD_OK) {
        sd_model_free(*out);
        *out = NULL;
    }
    return s;
}

sd_status sd_model_get_info(const sd_model *m, sd_model_info *info)
{
    memset(info, 0, sizeof *info);
    info->arch = m->arch;
    info->source = m->source;
    info->scheduler = m->sched_class;
    info->prediction_type = m->sched_cfg.prediction_type == SD_PRED_V_PREDICTION ? "v_prediction"
                            : m->sched_cfg.prediction_type == SD_PRED_SAMPLE    ? "sample"
                                                                                 : "epsilon";
    info->vae_scale = m->vae ? sd_vae_downscale(&m->vae_cfg) : m->taesd ? sd_taesd_downscale(&m->taesd_cfg) : 8;
    info->native_size = (int)m->unet_cfg.sample_size * info->vae_scale;
    info->latent_channels = (int)m->unet_cfg.in_channels;
    info->context_dim = (int)m->unet_cfg.cross_attention_dim[0];
    info->has_taesd = m->taesd != NULL;
    info->lcm_guidance_embedding = m->unet_cfg.time_cond_proj_dim > 0;
    info->weight_bytes = m->w_text.bytes_device + m->w_text.bytes_mapped + m->w_text2.bytes_device +
                         m->w_text2.bytes_mapped + m->w_unet.bytes_device +
                         m->w_unet.bytes_mapped + m->w_vae.bytes_device + m->w_vae.bytes_mapped +
                         m->w_taesd.bytes_device + m->w_taesd.bytes_mapped;
    info->active_loras = sd_lora_state_loras(m->lora);
    bool cuda = m->params.backend == SD_BACKEND_CUDA;
    const char *bk = cuda ? NULL : sd_backend_cpu_bf16_isa(m->be), *ik = cuda ? NULL : sd_backend_cpu_int8_isa(m->be);
    bool int8 = !cuda && m->be->int8 && ik; /* int8 without int8 kernels runs as bf16 (apply_precision warns) */
    info->precision = cuda ? "fp16" : int8 ? "int8" : m->be->bf16 ? "bf16" : "fp32";
    info->kernels = cuda ? "cuda" : int8 ? ik : m->be->bf16 && bk ? bk : sd_backend_cpu_isa(m->be);
    return SD_OK;
}

/* ---------------------------------------------------------------- prompt encoder */

int sd_model_prompt_tokens(const sd_model *m)
{
    int S = sd_tokenizer_max_length(m->tok), mp = m->clip_cfg.max_position_embeddings;
    if (m->sdxl && m->clip2_cfg.max_position_embeddings < mp) /* SDXL: both encoders read S tokens */
        mp = m->clip2_cfg.max_position_embeddings;
    return S <= 0 || S > mp ? mp : S;
}

sd_status sd_model_tokenize(const sd_model *m, sd_tokenizer *tok, const char *prompt, int32_t *ids, int S,
                            bool warn)
{
    int n_valid = 0, n_trunc = 0;
    SD_TRY(sd_tokenizer_encode(tok ? tok : m->tok, prompt ? prompt : "", m->tok_mode, ids, S, &n_valid, &n_trunc));
    if (warn && n_trunc > 0)
        fprintf(stderr, "streamdiff: warning: the prompt is %d tokens too long; CLIP sees only the first %d tokens\n",
                n_trunc, S - 2);
    return SD_OK;
}

void sd_model_text_forward(const sd_model *m, sd_ctx *ctx, const int32_t *ids, int S, int clip_skip, float *out)
{
    sd_ctx_reset(ctx);
    sd_tensor h = sd_clip_forward(ctx, m->clip, ids, 1, S, clip_skip, NULL, NULL);
    sd_tensor_to_f32(ctx, &h, out);
}
