/* streamdiff — real-time diffusion image generation in C.
 *
 * The one public header. Every object is an opaque handle; every call that can
 * fail returns an sd_status, and sd_last_error() gives a human-readable message
 * for the most recent failure on the calling thread.
 *
 * Parameter structs come with *_default_params() functions: fill the defaults,
 * change what you need, pass the struct.
 */
#ifndef STREAMDIFF_H
#define STREAMDIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SD_API marks the library's functions. The library is built with hidden
 * visibility, so these are the only symbols libstreamdiff.so exports
 * (tests/api_exports.sh checks that the two lists are equal). */
#ifndef SD_API
#if defined(SD_BUILDING_LIBRARY) && (defined(__GNUC__) || defined(__clang__))
#define SD_API __attribute__((visibility("default")))
#else
#define SD_API
#endif
#endif

/* ---------------------------------------------------------------- status */

typedef enum sd_status {
    SD_OK = 0,
    SD_ERR_INVALID_ARGUMENT,  /* a parameter is out of range or inconsistent */
    SD_ERR_OUT_OF_MEMORY,     /* an allocation failed or a size limit was hit */
    SD_ERR_IO,                /* a file could not be opened, read or written */
    SD_ERR_FORMAT,            /* a file is malformed (see the message for which rule) */
    SD_ERR_UNSUPPORTED,       /* valid input that this build does not handle */
    SD_ERR_NOT_FOUND,         /* a file, tensor, key or model is missing */
    SD_ERR_SHAPE,             /* tensor shapes disagree */
    SD_ERR_BACKEND,           /* the compute backend failed (e.g. no GPU) */
    SD_ERR_INTERNAL           /* a bug: please report it */
} sd_status;

/* Short stable name of a status code, e.g. "SD_ERR_FORMAT". */
SD_API const char *sd_status_name(sd_status s);

/* Message of the most recent error on this thread ("" if none). The pointer
 * stays valid until the next failing call on the same thread. */
SD_API const char *sd_last_error(void);

/* Library version, e.g. "0.1.0". */
SD_API const char *sd_version(void);

/* ---------------------------------------------------------------- safetensors
 * A read-only, zero-copy view of a .safetensors file (mmapped). Every rule of
 * the format is checked when opening; each violation is its own error message
 * starting with a rule name (see src/io/safetensors.h for the list). */

typedef struct sd_safetensors sd_safetensors;

SD_API sd_status sd_safetensors_open(const char *path, sd_safetensors **out);
SD_API void sd_safetensors_close(sd_safetensors *st);


/* ---------------------------------------------------------------- images
 * 8-bit RGB, row-major, width*height*3 bytes. Images returned by the library
 * are freed with sd_image_free(). */

typedef struct sd_image {
    int width, height;
    uint8_t *data;
} sd_image;

SD_API void sd_image_free(sd_image *img);
/* PNG or JPEG. */
SD_API sd_status sd_image_load(const char *path, sd_image *out);
/* PNG; `parameters` (may be NULL) is stored as an A1111-style "parameters" text chunk. */
SD_API sd_status sd_image_save_png(const char *path, const sd_image *img, const char *parameters);
/* The largest width or height a decode accepts (larger files give SD_ERR_FORMAT). */
#define SD_IMAGE_MAX_SIDE 16384
/* PNG or JPEG (told apart by signature) from `len` bytes in memory; broken data gives SD_ERR_FORMAT. */
SD_API sd_status sd_image_decode(const void *data, size_t len, sd_image *out);
/* Encodes into a malloc'd buffer (free() it): JPEG with quality 1..100 (clamped), or PNG with an
 * optional `parameters` text chunk as sd_image_save_png. */
SD_API sd_status sd_image_encode_jpeg(const sd_image *img, int quality, uint8_t **out, size_t *out_len);
SD_API sd_status sd_image_encode_png(const sd_image *img, const char *parameters, uint8_t **out, size_t *out_len);

/* ---------------------------------------------------------------- models */

typedef enum sd_backend_kind { SD_BACKEND_CPU = 0, SD_BACKEND_CUDA = 1 } sd_backend_kind;

typedef struct sd_model sd_model;

/* Compute precision of the CPU backend. FP32 (default): float32 everywhere. BF16: weights kept in
 * bf16 (half the memory), linears, convolutions and attention with bf16 inputs and fp32 sums on AMX or
 * AVX512-BF16 when the CPU has them (else bf16 storage with fp32 compute); norms and softmax in fp32.
 * AUTO: BF16 where the CPU has AMX, or AVX512-BF16 whose bf16 dot product outpaces its fp32 FMA (measured
 * once per process: AMD Zen 4/5), else FP32 (on CUDA: its fp16). INT8 (CPU,
 * experimental): as BF16, but linears and convolutions W8A8 on AMX-INT8 or AVX512-VNNI: weights
 * quantised once per output channel (on their first use), activations per token row / per output
 * pixel, int32 sums; a CPU without those units runs INT8 as BF16 (with a warning on stderr). Error
 * bounds: docs/precision.md. CUDA: SD_ERR_UNSUPPORTED. */
typedef enum sd_precision { SD_PRECISION_FP32 = 0, SD_PRECISION_BF16, SD_PRECISION_INT8, SD_PRECISION_AUTO } sd_precision;
/* "fp32", "bf16", "int8", "auto" -> *out; false for anything else */
SD_API bool sd_precision_from_name(const char *name, sd_precision *out);
SD_API const char *sd_precision_name(sd_precision p);

typedef struct sd_model_params {
    sd_backend_kind backend; /* SD_BACKEND_CPU */
    int n_threads;           /* CPU threads; 0 = all cores */
    int cuda_device;         /* 0 */
    const char *taesd;       /* optional TAESD folder or HF id for fast encode/decode; NULL = none */
    const char *revision;    /* HF cache revision for model ids; NULL = "main" */
    bool keep_f16;           /* keep F16 weights as F16 in memory (CPU converts per op) */
    const char *variant;     /* prefer "<name>.<variant>.safetensors" (e.g. "fp16"); NULL = plain first */
    /* Single-file checkpoints carry no configs or tokenizer. `config_dir` (a
     * diffusers folder or HF id of the same architecture) supplies them, like
     * diffusers' from_single_file(config=...). NULL: derive configs from the
     * tensors, use the standard SD1.5/SD2.1 values for what cannot be derived,
     * and look for the CLIP tokenizer in the HF cache. */
    const char *config_dir;
    const char *prediction_type; /* override: "epsilon" or "v_prediction"; NULL = from the model */
    /* Scan every floating-point weight for NaN/Inf while loading (one pass over
     * the weights, off by default): a non-finite value fails the load with
     * SD_ERR_FORMAT naming the tensor, instead of black or noise images later. */
    bool check_finite;
    sd_precision precision; /* SD_PRECISION_FP32 (default), BF16, INT8, AUTO; see sd_precision */
} sd_model_params;

SD_API void sd_model_default_params(sd_model_params *p);
/* `path`: a diffusers folder (model_index.json), a single-file SD1.x/SD2.x
 * checkpoint (.safetensors), or a Hugging Face model id present in the local
 * HF cache (never downloads). */
SD_API sd_status sd_model_load(const char *path, const sd_model_params *p, sd_model **out);
SD_API void sd_model_free(sd_model *m);

typedef struct sd_model_info {
    const char *arch;        /* the model family: "sd1", "sd2" or "sdxl" */
    const char *source;      /* resolved path */
    const char *scheduler;   /* the model's scheduler class */
    const char *prediction_type;
    int native_size;         /* pixels (unet sample_size * vae scale) */
    int vae_scale;           /* 8 */
    int latent_channels;
    int context_dim;
    bool has_taesd;
    bool lcm_guidance_embedding; /* UNet has time_cond_proj_dim */
    size_t weight_bytes;
    int active_loras;        /* LoRAs in the set fused now by sd_model_apply_loras (0: the base weights,
                                also after a failure while writing weights) */
    const char *precision;   /* what it computes in: "fp32", "bf16" or "int8" (auto resolved; int8 without
                                int8 kernels: "bf16"), "fp16" on CUDA */
    const char *kernels;     /* the kernel set: CPU "amx", "avx512bf16" (bf16 compute; int8: "amx" or
                                "avx512vnni"), "avx512", "avx2", "blas" (fp32 compute: with precision
                                "bf16", bf16 weights only); "cuda" */
} sd_model_info;
SD_API sd_status sd_model_get_info(const sd_model *m, sd_model_info *info);

/* ---------------------------------------------------------------- LoRA
 * LoRA / LoCon adapters fused into the loaded UNet and text encoder:
 *     W' = W + sum_i scale_i * (alpha_i / rank_i) * up_i @ down_i
 * (alpha = rank when a file gives none; conv layers through reshapes: down
 * [r,C,kh,kw], up [O,r,1,1] -> delta [O,C,kh,kw]).
 * Formats: kohya / A1111 (lora_unet_*, lora_te_*, lora_te1_* with
 * .lora_down.weight / .lora_up.weight / .alpha, LoCon conv layers; e.g. the
 * LCM-LoRAs), diffusers (unet.* / text_encoder.* with .lora_A/.lora_B,
 * .lora.down/.lora.up or *_lora.down/up, optional .alpha and the
 * lora_adapter_metadata that diffusers saves) and PEFT adapters
 * (base_model.model.* keys; `path` may be the adapter folder, its
 * adapter_config.json is read for lora_alpha / alpha_pattern / use_rslora).
 * LoHa, LoKr, (IA)^3, DoRA, OFT, LoCon-Tucker (lora_mid) and other variants
 * give SD_ERR_UNSUPPORTED naming the variant. */

typedef struct sd_lora_spec {
    const char *path; /* .safetensors file (or PEFT adapter folder) */
    float scale;      /* strength, e.g. 1.0; 0 = loaded and checked but not applied */
} sd_lora_spec;

typedef struct sd_lora_options {
    /* LoRA tensors that match no layer of the model: false (default) = error
     * SD_ERR_NOT_FOUND naming them; true = a warning on stderr, then ignored. */
    bool allow_unmatched;
} sd_lora_options;

/* Replaces the active LoRA set with `loras` (n = 0 removes all): the weights
 * become base + the new set, computed from the base weights, so changing
 * scales needs no reload and removing all gives the base weights back bit
 * for bit. Every file is read and checked before any weight changes; on an
 * input error the previous set stays active. Not thread-safe with a
 * generation running on the same model; a stream created earlier keeps its
 * encoded prompt until sd_stream_set_prompt is called again. */
SD_API sd_status sd_model_apply_loras(sd_model *m, const sd_lora_spec *loras, int n);
/* The same with options (opt may be NULL). */
SD_API sd_status sd_model_apply_loras_ex(sd_model *m, const sd_lora_spec *loras, int n, const sd_lora_options *opt);

/* ---------------------------------------------------------------- ControlNet
 * ControlNetModels steer a generation with a control image (edges, depth, pose, ...): each net runs
 * beside the UNet at every step and adds its residuals to the UNet's skip connections and mid block;
 * several at once (MultiControlNet) add up. Same numerics as diffusers' StableDiffusionControlNetPipeline. */

typedef struct sd_controlnet sd_controlnet;

/* Loads a ControlNet for model `m`'s UNet, onto m's backend in m's precision (and weight variant).
 * `path`: a diffusers ControlNetModel folder (config.json + diffusion_pytorch_model[.variant].safetensors),
 * a single-file .safetensors of the lllyasviel ControlNet v1.0/v1.1 kind (control_model.* keys, or the
 * same keys without the prefix; its config is the model's UNet's plus what the tensors show), or a
 * Hugging Face id in the local cache (never downloads). A ControlNet of another base model (e.g. an SD2.1
 * net on SD1.5: cross_attention_dim, channels, levels or resnets per level differ) is SD_ERR_FORMAT naming
 * the difference. Use it only with `m`, and free it before `m`. */
SD_API sd_status sd_controlnet_load(sd_model *m, const char *path, sd_controlnet **out);
SD_API void sd_controlnet_free(sd_controlnet *c);

typedef struct sd_control {
    const sd_controlnet *net;
    const sd_image *image;          /* the control image (an edge map, depth map, ...: see sd_control_preprocess),
                                       RGB; another size than the generation's is resized to it (bilinear) */
    float scale;                    /* conditioning scale, 0..10: 1.0 */
    float guidance_start, guidance_end; /* the fraction of the steps it acts on, 0 <= start < end <= 1: 0, 1 */
} sd_control;

/* scale 1, guidance 0..1, no net or image */
SD_API void sd_control_default(sd_control *c);

/* Control images made from an input image, without models. Output: RGB, the input's size.
 *   CANNY     Canny edges as OpenCV's cv2.Canny(img, low, high) (the ControlNet canny annotator): Sobel 3x3
 *             per channel (the channel with the largest gradient), L1 magnitude, non-maximum suppression,
 *             hysteresis; white edges on black. Thresholds 0 <= low <= high <= 2040 (L1 gradient units).
 *   SOFTEDGE  the Sobel gradient magnitude of the luminance, scaled so the largest is 255 (soft edges).
 *   SCRIBBLE  soft edges thresholded at `threshold` (0..255 of the SOFTEDGE scale), lines 3 px wide: white
 *             strokes on black, as the scribble nets expect.
 *   INVERT    255 - value (a dark-on-light drawing -> the white-on-black lines the nets expect).
 *   TILE      the image itself (tile / identity nets; resizing happens at generation). */
typedef enum sd_preprocess {
    SD_PREPROCESS_NONE = 0, /* identity, like TILE */
    SD_PREPROCESS_CANNY,
    SD_PREPROCESS_SOFTEDGE,
    SD_PREPROCESS_SCRIBBLE,
    SD_PREPROCESS_INVERT,
    SD_PREPROCESS_TILE
} sd_preprocess;

typedef struct sd_preprocess_params {
    sd_preprocess kind;
    int canny_low, canny_high; /* 100, 200 */
    int threshold;             /* SCRIBBLE: 64 */
} sd_preprocess_params;

SD_API void sd_preprocess_default_params(sd_preprocess_params *p);
/* "none", "canny", "softedge" (also "sobel"), "scribble", "invert", "tile" (also "identity") -> *out; false else */
SD_API bool sd_preprocess_from_name(const char *name, sd_preprocess *out);
SD_API const char *sd_preprocess_name(sd_preprocess p);
/* `out` receives a new image (sd_image_free). Unknown kinds and out-of-range thresholds are
 * SD_ERR_INVALID_ARGUMENT naming them; an empty image SD_ERR_INVALID_ARGUMENT. */
SD_API sd_status sd_control_preprocess(const sd_image *in, const sd_preprocess_params *p, sd_image *out);

/* ---------------------------------------------------------------- generation */

typedef enum sd_rng_type {
    SD_RNG_TYPE_TORCH = 0, /* default: equals torch.randn with torch.Generator("cpu").manual_seed(seed) */
    SD_RNG_TYPE_FAST = 2   /* Philox-based, for real-time use */
} sd_rng_type;

typedef void (*sd_progress_fn)(void *user, int step, int total, double elapsed_s);

typedef struct sd_gen_params {
    const char *prompt;          /* "" */
    const char *negative_prompt; /* NULL = "" */
    int width, height;           /* 0 = model's native size; multiples of 8 */
    int steps;                   /* 0 = sampler default (LCM/TCD 4, Euler-turbo 1, others 20) */
    float guidance_scale;        /* 7.5; <= 1 disables CFG (one UNet pass) */
    const char *sampler;         /* NULL = the model's scheduler; lcm, tcd, euler, euler_a, ddim, dpm++2m */
    const char *schedule;        /* NULL = default; "karras" for Karras sigmas */
    uint64_t seed;               /* 42 */
    int batch_size;              /* 1 */
    int clip_skip;               /* 0 = last layer; k skips the last k layers (diffusers clip_skip) */
    float strength;              /* img2img: 0.8 */
    float eta;                   /* DDIM eta / TCD gamma, 0..1, 0 */
    bool use_taesd;              /* decode/encode with the TAESD loaded with the model */
    sd_rng_type rng;
    sd_progress_fn progress;     /* called after every step; may be NULL */
    void *progress_user;
    const sd_control *controls;  /* ControlNets (at most 8; their residuals add up), NULL = none */
    int n_controls;
    /* SDXL micro-conditioning (diffusers' call arguments; ignored by SD1/SD2). {height, width} pairs and
     * {top, left}; 0 = the default: original_size = target_size = the output size, crop (0, 0). The negative
     * ones (used with CFG) default to the positive ones; txt2img uses its own negative time ids only when
     * both negative sizes are given (as diffusers). With CFG and no negative prompt, SDXL models whose
     * model_index.json sets force_zeros_for_empty_prompt (the default) use zero negative embeddings. */
    int original_size[2], crops_coords_top_left[2], target_size[2];
    int negative_original_size[2], negative_crops_coords_top_left[2], negative_target_size[2];
    /* SDXL: the prompts of the second text encoder (diffusers prompt_2 / negative_prompt_2); NULL or "" = the
     * prompt / negative_prompt. Whether the negatives are zeros depends on negative_prompt alone (as diffusers). */
    const char *prompt_2, *negative_prompt_2;
} sd_gen_params;

SD_API void sd_gen_default_params(sd_gen_params *p);
/* `out` receives batch_size images. */
SD_API sd_status sd_txt2img(sd_model *m, const sd_gen_params *p, sd_image *out);
SD_API sd_status sd_img2img(sd_model *m, const sd_gen_params *p, const sd_image *init, sd_image *out);
/* The A1111-style parameters text for a generation (malloc'd, free()),
 * with the defaults the generation resolves (steps, size) filled in. */
SD_API char *sd_gen_parameters_text(const sd_model *m, const sd_gen_params *p, bool img2img);

/* ---------------------------------------------------------------- streaming
 * StreamDiffusion: a few-step model turned into a video-rate pipeline. */

typedef struct sd_stream sd_stream;

typedef enum sd_cfg_type { SD_CFG_NONE = 0, SD_CFG_FULL, SD_CFG_SELF, SD_CFG_INITIALIZE } sd_cfg_type;

#define SD_STREAM_MAX_STEPS 16

typedef struct sd_stream_params {
    int width, height;                    /* 512 x 512 */
    int t_index_list[SD_STREAM_MAX_STEPS];/* {32, 45} */
    int n_t_index;                        /* 2 */
    int num_inference_steps;              /* LCM schedule length, 50 */
    int frame_buffer_size;                /* 1 */
    bool use_denoising_batch;             /* true */
    bool do_add_noise;                    /* true */
    sd_cfg_type cfg_type;                 /* SD_CFG_SELF */
    float guidance_scale;                 /* 1.2 */
    float delta;                          /* 1.0 */
    uint64_t seed;                        /* 2 */
    float similarity_threshold;           /* 0 = filter off; e.g. 0.98 */
    int max_skip_frames;                  /* 10 */
    bool use_taesd;                       /* true when the model has TAESD */
    sd_rng_type rng;
    int queue_size;                       /* bounded input/output queues, 4 */
    bool drop_old_frames;                 /* live input: newest frame wins (true); file input: false */
    bool use_graphs;                      /* true: on a backend with graphs (CUDA) the per-frame step is
                                           * captured once and replayed (re-captured after a guidance, delta
                                           * or LoRA change; a prompt change needs none); no effect on the CPU */
    /* ControlNets (NULL = none; at most 8; read at sd_stream_create, the nets must outlive the stream; no CUDA
     * graphs; in stream groups too): every row of the stream batch takes the control image of its own frame.
     * controls[k].image: a fixed control image (resized to the stream size), or NULL: made from each input
     * frame with control_preprocess (img2img frames only). guidance_start / end act per denoising step:
     * step k of n counts as the fraction k/n .. (k+1)/n. */
    const sd_control *controls;
    int n_controls;
    sd_preprocess_params control_preprocess; /* for controls without an image (default: none = the frame); each
                                              * net's can change live (sd_stream_set_control) */
} sd_stream_params;

SD_API void sd_stream_default_params(sd_stream_params *p);
/* The rules of stream parameters (the one place they are written: sd_stream_create, the CLI and the
 * server use it). SD_OK, or SD_ERR_INVALID_ARGUMENT with sd_last_error() naming the parameter, e.g.
 * "t_index_list[1] = 50 is outside 0..49 (num_inference_steps 50)"; *param (may be NULL) gets the
 * parameter's name as spelled in sd_stream_params ("t_index_list", "width", ...; NULL when OK).
 * What needs the model (an autoencoder; width and height multiples of its downscale times the UNet's,
 * e.g. 64 for SD 1.x with the full VAE) is checked by sd_stream_create. */
SD_API sd_status sd_stream_params_validate(const sd_stream_params *p, const char **param);
SD_API sd_status sd_stream_create(sd_model *m, const sd_stream_params *p, sd_stream **out);
SD_API void sd_stream_free(sd_stream *s);
/* Callable any time, also while frames flow; takes effect on the next frame. */
SD_API sd_status sd_stream_set_prompt(sd_stream *s, const char *prompt, const char *negative_prompt);
/* Live settings, read by every stream step (take effect on the next frame):
 * guidance_scale (ignored for cfg_type none), delta, similarity_threshold
 * (0 = filter off) and max_skip_frames. Out-of-range values are refused. */
SD_API sd_status sd_stream_set_guidance(sd_stream *s, float guidance_scale, float delta);
SD_API sd_status sd_stream_set_similarity_filter(sd_stream *s, float threshold, int max_skip_frames);
/* Live denoising steps: a new t_index_list with the stream's number of entries (the stream batch keeps
 * its size; another count needs a new stream), checked as sd_stream_params_validate does. Frames in
 * flight finish on the new schedule. A refused list leaves the stream unchanged. */
SD_API sd_status sd_stream_set_t_index(sd_stream *s, const int *t_index_list, int n);
/* Live seed: the stream's noise is drawn again from `seed` and its buffers restart, as in a stream
 * created with that seed (frames in flight are dropped from the denoising batch). */
SD_API sd_status sd_stream_set_seed(sd_stream *s, uint64_t seed);
/* Prompt and seed blending (StreamDiffusion forks' update_stream_params prompt_list / seed_list), live like the
 * setters above; blending happens at the call, never per frame. With weights w_i (finite, >= 0, at least one
 * > 0; negative weights are refused) the effective weights are a_i = w_i / sum(w) when `normalize`, else w_i.
 *   LINEAR  out = sum_i a_i * x_i                        (any number of entries)
 *   SLERP   two entries: t = a_1; t <= 0 -> x_0, t >= 1 -> x_1; else, over the flattened tensors,
 *           theta = acos(clamp(<x_0/|x_0|, x_1/|x_1|>, -1, 1)),
 *           out = sin((1-t) theta)/sin(theta) * x_0 + sin(t theta)/sin(theta) * x_1
 *           (theta < 1e-6: (1-t) x_0 + t x_1); one or more than two entries: LINEAR, as the forks do.
 * Prompts: x_i = the prompt's text-encoder output [S, D] (each encoded once and cached by its text: a new
 * weight re-blends without encoding, a changed prompt encodes only itself); negative_prompt (NULL = "") is
 * the unconditional prompt as in sd_stream_set_prompt (which equals one prompt of weight 1).
 * Seeds: x_i = the stream's initial noise drawn from seed_i (cached by seed); the stream restarts on the
 * blend as sd_stream_set_seed does, whose generator (for later txt2img frames) continues from seeds[0]'s;
 * sd_stream_set_seed(s, x) equals one seed of weight 1.
 * At most SD_STREAM_MAX_BLEND entries. An empty list, too many entries, a NaN / infinite / negative weight or
 * weights summing to zero are SD_ERR_INVALID_ARGUMENT naming them; a refused call leaves the stream as it was. */
#define SD_STREAM_MAX_BLEND 8
typedef enum sd_blend_mode { SD_BLEND_LINEAR = 0, SD_BLEND_SLERP = 1 } sd_blend_mode;
typedef struct sd_prompt_weight {
    const char *prompt;
    float weight;
} sd_prompt_weight;
typedef struct sd_seed_weight {
    uint64_t seed;
    float weight;
} sd_seed_weight;
/* The weight rule above (the one place it is written; the setters, the CLI and the server use it): SD_OK, or
 * SD_ERR_INVALID_ARGUMENT with sd_last_error() naming the problem, prefixed with `what` ("prompts", "seeds"). */
SD_API sd_status sd_blend_check(const float *weights, int n, const char *what);
/* "linear" / "slerp" -> *out; false for other names */
SD_API bool sd_blend_mode_from_name(const char *name, sd_blend_mode *out);
SD_API const char *sd_blend_mode_name(sd_blend_mode m);
SD_API sd_status sd_stream_set_prompts(sd_stream *s, const sd_prompt_weight *prompts, int n,
                                       const char *negative_prompt, sd_blend_mode mode, bool normalize);
SD_API sd_status sd_stream_set_seeds(sd_stream *s, const sd_seed_weight *seeds, int n, sd_blend_mode mode,
                                     bool normalize);
/* Live ControlNet settings of a stream: net k (0-based) of sd_stream_params.controls. set takes effect on the
 * next frame (frames in the stream batch keep their control images; the new scale acts on every row), without
 * allocation; out-of-range values (sd_stream_params_validate's rule, sd_control_preprocess's thresholds) and
 * an unknown k are SD_ERR_INVALID_ARGUMENT naming them, and change nothing. */
typedef struct sd_stream_control {
    float scale;                        /* conditioning scale, 0..10 */
    float guidance_start, guidance_end; /* 0 <= start < end <= 1 */
    sd_preprocess_params preprocess;    /* how this net's control image is made from each input frame (each net
                                         * has its own; sd_stream_params.control_preprocess at creation) */
    bool from_frame;                    /* get: the net makes its control image from the frames; false: it has a
                                         * fixed image and preprocess has no effect. Ignored by set. */
} sd_stream_control;
/* The rule of live ControlNet settings (set uses it; so do the server protocol and OSC): SD_OK, or
 * SD_ERR_INVALID_ARGUMENT naming the value (scale, guidance window, preprocessor kind, thresholds). */
SD_API sd_status sd_stream_control_validate(const sd_stream_control *c);
SD_API int sd_stream_control_count(const sd_stream *s);
SD_API sd_status sd_stream_get_control(const sd_stream *s, int k, sd_stream_control *out);
SD_API sd_status sd_stream_set_control(sd_stream *s, int k, const sd_stream_control *c);
/* Synchronous: one img2img frame in, the stream's output for it out. */
SD_API sd_status sd_stream_img2img(sd_stream *s, const sd_image *in, sd_image *out);
/* Synchronous: one txt2img frame. */
SD_API sd_status sd_stream_txt2img(sd_stream *s, sd_image *out);
/* Asynchronous img2img through the input / inference / output threads.
 * push copies the frame and returns at once. pull waits up to timeout_ms
 * (-1 = forever; SD_ERR_NOT_FOUND on time-out) and gives the next output in
 * input order with the index of the input frame it belongs to (frame_id may
 * be NULL). Queue policy when the input queue is full: with drop_old_frames
 * (live input) the oldest waiting frame is dropped and counted; without it
 * (file input) push blocks until there is room, so nothing is lost.
 * The stream batch delays a frame by len(t_index_list)-1 steps; the warm-up
 * outputs of the empty pipeline are not returned, and sd_stream_flush()
 * pushes the last frame again until every pushed frame has left; flush does
 * not wait, and once the stream is flushed and every pushed frame has been
 * pulled (or dropped), pull returns SD_ERR_NOT_FOUND at once. A frame the
 * similarity filter skips still comes out (the previous output image) with
 * its own id. push and pull may run on different threads (with file input
 * someone must pull, or push blocks when the queues are full); after the
 * first push the synchronous frame calls are refused on that stream. */
SD_API sd_status sd_stream_push_frame(sd_stream *s, const sd_image *in);
SD_API sd_status sd_stream_pull_frame(sd_stream *s, sd_image *out, int64_t *frame_id, int timeout_ms);
SD_API sd_status sd_stream_flush(sd_stream *s);

typedef struct sd_stream_stats {
    uint64_t frames_in, frames_out, frames_skipped, frames_dropped;
    double fps;            /* output frames per second (EMA) */
    double latency_ms;     /* frame in -> output out (EMA): push -> pull, or one synchronous call */
    double inference_ms;   /* one stream step (EMA) */
} sd_stream_stats;
SD_API sd_status sd_stream_get_stats(const sd_stream *s, sd_stream_stats *st);

/* ---------------------------------------------------------------- stream groups
 * Many streams on one model: a group runs the pending frames of several
 * streams in ONE batched UNet call (per-row timesteps and per-row prompt K/V),
 * then finishes each stream on its own (its noise, t_index_list, cfg_type,
 * RCFG state, similarity filter, buffer). Each stream's output equals what it
 * gives alone. Members share the model and the frame size; each must use the
 * denoising batch with frame_buffer_size 1. A tick takes at most one frame per
 * stream and at most max_batch_frames frames, starting round robin; more
 * pending frames run in further ticks. A member stays usable on its own
 * (prompt / setters / sd_stream_img2img); async (pushed) streams are refused,
 * and a member refuses push / pull / flush.
 * sd_stream_free removes a stream from its group. Not for concurrent calls on
 * the same group from several threads (the group serializes them). */

typedef struct sd_stream_group sd_stream_group;

/* max_streams: members (1..256); max_batch_frames: frames per batched UNet call (1..max_streams). */
SD_API sd_status sd_stream_group_create(sd_model *m, int max_streams, int max_batch_frames, sd_stream_group **out);
/* Frees the group (not its streams, which stay usable). */
SD_API void sd_stream_group_free(sd_stream_group *g);
/* Adds a stream (appended: its index is the count before). */
SD_API sd_status sd_stream_group_add(sd_stream_group *g, sd_stream *s);
/* Removes a stream (later members move down one index). */
SD_API sd_status sd_stream_group_remove(sd_stream_group *g, sd_stream *s);
SD_API int sd_stream_group_count(const sd_stream_group *g);
/* Synchronous: in[i] is one frame for member i (i < n, n <= count); out[i]
 * receives member i's output, as sd_stream_img2img would. */
SD_API sd_status sd_stream_group_img2img(sd_stream_group *g, const sd_image *const *in, sd_image *const *out, int n);
/* The general call (what a server uses): one frame for each of n distinct
 * members streams[i] (any order). in[i] != NULL: an img2img frame, as
 * sd_stream_img2img; in[i] == NULL: a txt2img frame, as sd_stream_txt2img
 * (the stream's own noise). out[i] receives stream i's output. Members that
 * have no frame in this call are left as they are (a stream that stops
 * sending costs nothing). img2img and txt2img frames share the UNet call. */
SD_API sd_status sd_stream_group_run(sd_stream_group *g, sd_stream *const *streams, const sd_image *const *in,
                              sd_image *const *out, int n);
/* A member's index (for sd_stream_group_get_stats), -1 when s is not a member. */
SD_API int sd_stream_group_index(const sd_stream_group *g, const sd_stream *s);

typedef struct sd_stream_group_stats {
    uint64_t ticks;          /* batched UNet calls (the group) / the calls this stream was in */
    uint64_t frames;         /* frames that went through the UNet */
    uint64_t frames_skipped; /* frames the similarity filter skipped (no UNet rows used) */
    double batch_frames;     /* frames per tick (EMA) */
    double unet_rows;        /* UNet batch rows per tick (EMA) */
    double unet_rows_padded; /* the same with the padding to a captured graph size (CUDA: powers of two) */
    double tick_ms;          /* one tick (EMA) */
    double latency_ms;       /* sd_stream_group_img2img start -> this stream's output ready (EMA) */
} sd_stream_group_stats;
/* index -1: the whole group; 0..count-1: that member. */
SD_API sd_status sd_stream_group_get_stats(const sd_stream_group *g, int index, sd_stream_group_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* STREAMDIFF_H */
