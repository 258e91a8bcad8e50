/* Conformance runner: replays a reference case (a folder with manifest.json,
 * inputs.safetensors, expected.safetensors, as documented in
 * shared/fixtures/README.md) and compares every output with its tolerance.
 *
 * The case kind is recognised from the manifest's contents (not its name), so
 * new cases of a known kind run without code changes:
 *   scheduler_class            -> scheduler rollout      (check_sched.c)
 *   embedding_dim, no model    -> LCM guidance embedding (check_sched.c)
 *   prompts_file               -> tokenizer              (check_tokenizer.c)
 *   stream_constructor         -> StreamDiffusion replay (check_stream.c)
 *   t_index_list + scheduler_config -> LCM stream coefficient tables (check_sched.c)
 *   pipeline                   -> diffusers pipeline     (check_pipe.c)
 *   model_dir + _class_name of its config.json (or model_class):
 *     UNet2DConditionModel     -> check_unet.c
 *     CLIPTextModel[WithProjection] -> check_clip.c
 *     AutoencoderKL / AutoencoderTiny -> check_vae.c
 *     ControlNetModel          -> check_controlnet.c
 */
#ifndef SD_CHECK_H
#define SD_CHECK_H

#include "backend/backend.h"
#include "io/config.h"
#include "io/safetensors.h"

typedef struct sd_case {
    const char *dir;          /* case folder */
    const char *name;         /* manifest name */
    char *root;               /* fixtures root: model_dir paths are relative to it (parent of cases/) */
    sd_config manifest;
    sd_safetensors *inputs;   /* NULL if the case has no inputs.safetensors */
    sd_safetensors *expected; /* NULL if absent */
    sd_backend *be;
    bool verbose;
    int n_checked, n_failed;
    double worst_ratio;       /* max over outputs of err / tolerance */
} sd_case;

/* Path of a manifest key naming a model folder (e.g. "model_dir"), resolved
 * against the fixtures root. malloc'd; NULL + error if absent. */
char *sd_case_path(sd_case *c, const char *manifest_key);
const sd_st_tensor *sd_case_input(sd_case *c, const char *name);       /* NULL + error if absent */
const sd_st_tensor *sd_case_expected(sd_case *c, const char *name);    /* NULL + error if absent */
/* Input tensor as a freshly malloc'd float32 array (caller frees). */
float *sd_case_input_f32(sd_case *c, const char *name, size_t *n);
/* Input tensor that must have `ndim` dimensions: its shape into shape[0..ndim), its values as a malloc'd
 * float32 array into *out (caller frees). SD_ERR_NOT_FOUND / SD_ERR_FORMAT name the input. */
sd_status sd_case_input_nd(sd_case *c, const char *name, int ndim, float **out, int64_t *shape);
/* Backends with F16 activations (CUDA) are held to
 * max(tolerance, rel * max(1, max |expected|)) instead (default 1e-2, the
 * fp16 bound); 0 or less restores the default. */
void sd_check_set_f16_rel(double rel);
/* relative tolerance for the backend's precision: bf16 5e-2, int8 1.5e-1 of the largest reference
 * magnitude; 0 for fp32 (the fixtures' own tolerances) */
double sd_check_precision_rel(const sd_backend *be);
/* The CUDA device the cases that load whole models (pipelines, streams) use
 * when the runner's backend is CUDA (default 0). */
void sd_check_set_cuda_device(int device);
/* Model parameters for a case that loads a whole model: the backend kind,
 * threads and device of the case's backend. */
void sd_case_model_params(const sd_case *c, sd_model_params *mp);
/* Tolerance for an expected tensor: manifest tolerances[name].recommended_max_abs_err. */
double sd_case_tolerance(sd_case *c, const char *name);
/* Compares `got` with expected tensor `name`; prints one line with max abs
 * and rel error and PASS/FAIL; updates the counters. A missing expected tensor
 * or a size mismatch counts as a failure. NaN never passes. */
void sd_case_compare(sd_case *c, const char *name, const float *got, size_t n);
/* An sd_ctx hook (set ctx.hook = sd_case_hook, ctx.hook_user = case) that
 * compares every hooked activation whose name "act.<name>" exists in
 * expected.safetensors (downloaded to float32 first). */
struct sd_ctx;
void sd_case_hook(void *user, const char *name, sd_tensor t);
/* Records a failure that is not a numeric comparison (e.g. a load error). */
void sd_case_fail(sd_case *c, const char *what);

/* Downloads `t` (on the case's backend) to float32 and compares it with expected tensor `name`. */
void sd_case_compare_tensor(sd_case *c, const char *name, sd_tensor t);
/* Records a failure when a real run's arena peak differs from the planned one. */
void sd_case_check_peak(sd_case *c, size_t peak, size_t planned);
/* Records a failure for every expected tensor not among done[0..n_done) (`runner`
 * names the runner in the message, e.g. "CLIP"). */
void sd_case_check_produced(sd_case *c, const char *const *done, int n_done, const char *runner);

typedef sd_status (*sd_case_fn)(sd_case *c);

/* Runs one case folder; returns SD_OK when every output passed. `fixtures_root`
 * may be NULL (then the case folder's grandparent is used). */
sd_status sd_check_case(const char *case_dir, const char *fixtures_root, sd_backend *be, bool verbose,
                        int *n_checked, int *n_failed);

/* Pending cases: reference cases of features not built yet, listed in a file
 * (one case folder name per line, then an optional reason; '#' starts a comment),
 * e.g. tests/data/fixtures_pending.txt. sd_check_case runs a pending case as
 * usual; when it fails it prints "PENDING" with the reason and returns SD_OK
 * (counted as one check, no failure); when it passes it fails with a message
 * asking to remove it from the list, so the list stays true. The file comes
 * from sd_check_set_pending_file, else from $SD_CHECK_PENDING; none: no case
 * is pending. A file that cannot be read is an error. */
sd_status sd_check_set_pending_file(const char *path);
/* Whether the case folder `case_dir` (matched by its last path component) is pending;
 * `reason` (may be NULL) gets the listed reason (static storage). */
bool sd_check_is_pending(const char *case_dir, const char **reason);

/* Family runners (each in its own file). */
sd_status sd_check_sched(sd_case *c);
sd_status sd_check_guidance_embedding(sd_case *c);
sd_status sd_check_tokenizer(sd_case *c);
sd_status sd_check_unet(sd_case *c);
sd_status sd_check_clip(sd_case *c);
sd_status sd_check_vae(sd_case *c);
sd_status sd_check_pipe(sd_case *c);
sd_status sd_check_stream(sd_case *c);
sd_status sd_check_controlnet(sd_case *c);

#endif
