"""ctypes declarations of include/streamdiff.h (the library's only public header) and the library loader.

Only functions and types declared in include/streamdiff.h are used. The structs below mirror the header's
field order exactly; a change of a struct in the header must be made here too (tests/python/test_capi.py
checks the documented defaults land in the mirrored fields). Every struct is allocated with spare room at
the end (``_Padded``), so a field appended to a C struct cannot make the library write past the Python
allocation.

Calls go through ``ctypes.CDLL``, which releases the GIL for the duration of every call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
from ctypes import POINTER, c_bool, c_char_p, c_double, c_float, c_int, c_size_t, c_uint8, c_uint64, c_void_p
from typing import Optional

LIBRARY_ENV = "STREAMDIFF_LIBRARY"

# sd_status
SD_OK = 0
STATUS_NAMES = (
    "SD_OK", "SD_ERR_INVALID_ARGUMENT", "SD_ERR_OUT_OF_MEMORY", "SD_ERR_IO", "SD_ERR_FORMAT",
    "SD_ERR_UNSUPPORTED", "SD_ERR_NOT_FOUND", "SD_ERR_SHAPE", "SD_ERR_BACKEND", "SD_ERR_INTERNAL",
)

# enums
SD_BACKEND_CPU, SD_BACKEND_CUDA = 0, 1
SD_RNG_TYPE_TORCH, SD_RNG_TYPE_FAST = 0, 2
SD_CFG_NONE, SD_CFG_FULL, SD_CFG_SELF, SD_CFG_INITIALIZE = 0, 1, 2, 3
SD_PRECISION_FP32, SD_PRECISION_BF16, SD_PRECISION_INT8, SD_PRECISION_AUTO = 0, 1, 2, 3
SD_STREAM_MAX_STEPS = 16
SD_STREAM_MAX_BLEND = 8
SD_BLEND_LINEAR, SD_BLEND_SLERP = 0, 1

c_enum = c_int  # C enums of the header are int-sized


class sd_image(ctypes.Structure):
    _fields_ = [("width", c_int), ("height", c_int), ("data", POINTER(c_uint8))]


class sd_model_params(ctypes.Structure):
    _fields_ = [
        ("backend", c_enum),
        ("n_threads", c_int),
        ("cuda_device", c_int),
        ("taesd", c_char_p),
        ("revision", c_char_p),
        ("keep_f16", c_bool),
        ("variant", c_char_p),
        ("config_dir", c_char_p),
        ("prediction_type", c_char_p),
        ("check_finite", c_bool),
        ("precision", c_enum),
    ]


class sd_model_info(ctypes.Structure):
    _fields_ = [
        ("arch", c_char_p),
        ("source", c_char_p),
        ("scheduler", c_char_p),
        ("prediction_type", c_char_p),
        ("native_size", c_int),
        ("vae_scale", c_int),
        ("latent_channels", c_int),
        ("context_dim", c_int),
        ("has_taesd", c_bool),
        ("lcm_guidance_embedding", c_bool),
        ("weight_bytes", c_size_t),
        ("active_loras", c_int),
        ("precision", c_char_p),
        ("kernels", c_char_p),
    ]


class sd_lora_spec(ctypes.Structure):
    _fields_ = [("path", c_char_p), ("scale", c_float)]


class sd_prompt_weight(ctypes.Structure):
    _fields_ = [("prompt", c_char_p), ("weight", c_float)]


class sd_seed_weight(ctypes.Structure):
    _fields_ = [("seed", c_uint64), ("weight", c_float)]


class sd_lora_options(ctypes.Structure):
    _fields_ = [("allow_unmatched", c_bool)]


PROGRESS_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_int, c_double)


class sd_control(ctypes.Structure):
    _fields_ = [
        ("net", c_void_p),  # sd_controlnet *
        ("image", POINTER(sd_image)),
        ("scale", c_float),
        ("guidance_start", c_float),
        ("guidance_end", c_float),
    ]


# sd_preprocess
SD_PREPROCESS_NONE, SD_PREPROCESS_CANNY, SD_PREPROCESS_SOFTEDGE, SD_PREPROCESS_SCRIBBLE = 0, 1, 2, 3
SD_PREPROCESS_INVERT, SD_PREPROCESS_TILE = 4, 5


class sd_preprocess_params(ctypes.Structure):
    _fields_ = [("kind", c_enum), ("canny_low", c_int), ("canny_high", c_int), ("threshold", c_int)]


class sd_gen_params(ctypes.Structure):
    _fields_ = [
        ("prompt", c_char_p),
        ("negative_prompt", c_char_p),
        ("width", c_int),
        ("height", c_int),
        ("steps", c_int),
        ("guidance_scale", c_float),
        ("sampler", c_char_p),
        ("schedule", c_char_p),
        ("seed", c_uint64),
        ("batch_size", c_int),
        ("clip_skip", c_int),
        ("strength", c_float),
        ("eta", c_float),
        ("use_taesd", c_bool),
        ("rng", c_enum),
        ("progress", PROGRESS_FN),
        ("progress_user", c_void_p),
        ("controls", POINTER(sd_control)),  # ControlNets; NULL = none
        ("n_controls", c_int),
        ("original_size", c_int * 2),  # SDXL micro-conditioning: (height, width), (top, left); 0 = default
        ("crops_coords_top_left", c_int * 2),
        ("target_size", c_int * 2),
        ("negative_original_size", c_int * 2),
        ("negative_crops_coords_top_left", c_int * 2),
        ("negative_target_size", c_int * 2),
        ("prompt_2", c_char_p),  # SDXL: the second text encoder's prompts; None = prompt / negative_prompt
        ("negative_prompt_2", c_char_p),
    ]


class sd_stream_params(ctypes.Structure):
    _fields_ = [
        ("width", c_int),
        ("height", c_int),
        ("t_index_list", c_int * SD_STREAM_MAX_STEPS),
        ("n_t_index", c_int),
        ("num_inference_steps", c_int),
        ("frame_buffer_size", c_int),
        ("use_denoising_batch", c_bool),
        ("do_add_noise", c_bool),
        ("cfg_type", c_enum),
        ("guidance_scale", c_float),
        ("delta", c_float),
        ("seed", c_uint64),
        ("similarity_threshold", c_float),
        ("max_skip_frames", c_int),
        ("use_taesd", c_bool),
        ("rng", c_enum),
        ("queue_size", c_int),
        ("drop_old_frames", c_bool),
        ("use_graphs", c_bool),
        ("controls", POINTER(sd_control)),
        ("n_controls", c_int),
        ("control_preprocess", sd_preprocess_params),
    ]


class sd_stream_control(ctypes.Structure):
    _fields_ = [
        ("scale", c_float),
        ("guidance_start", c_float),
        ("guidance_end", c_float),
        ("preprocess", sd_preprocess_params),
        ("from_frame", c_bool),
    ]


class sd_stream_stats(ctypes.Structure):
    _fields_ = [
        ("frames_in", c_uint64),
        ("frames_out", c_uint64),
        ("frames_skipped", c_uint64),
        ("frames_dropped", c_uint64),
        ("fps", c_double),
        ("latency_ms", c_double),
        ("inference_ms", c_double),
    ]


_SPARE = 256  # bytes of room after every struct the library fills


def padded(struct_type):
    """A new, zeroed instance of `struct_type` with _SPARE bytes after it (see the module docstring)."""
    holder = (ctypes.c_char * (ctypes.sizeof(struct_type) + _SPARE))()
    obj = struct_type.from_buffer(holder)
    obj._holder = holder  # keep the storage alive with the struct
    return obj


_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None
_lock = threading.Lock()


def _candidates() -> list:
    env = os.environ.get(LIBRARY_ENV)
    if env:
        if os.path.isdir(env):
            return sorted(glob.glob(os.path.join(env, "libstreamdiff.so*")), key=len) or [env]
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "libstreamdiff.so*")), key=len)
    sys_lib = ctypes.util.find_library("streamdiff")
    if sys_lib:
        found.append(sys_lib)
    return found


def library_path() -> Optional[str]:
    """The path of the loaded libstreamdiff (None before the first use)."""
    return _lib_path


def lib() -> ctypes.CDLL:
    """The loaded library (loaded and declared on first use)."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        cands = _candidates()
        if not cands:
            raise OSError(
                "streamdiff: libstreamdiff.so not found: not next to the package (pip install . puts it there), "
                f"not named by ${LIBRARY_ENV} (a path to the .so or its folder, e.g. build/libstreamdiff.so), and "
                "not on the system library path")
        errors = []
        for path in cands:
            try:
                handle = ctypes.CDLL(path)
            except OSError as e:
                errors.append(f"{path}: {e}")
                continue
            _declare(handle)
            _lib, _lib_path = handle, path
            return handle
        raise OSError("streamdiff: could not load libstreamdiff: " + "; ".join(errors))


def _fn(handle, name, restype, *argtypes):
    f = getattr(handle, name)
    f.restype = restype
    f.argtypes = list(argtypes)


def _declare(h) -> None:
    P = POINTER
    st = c_enum  # sd_status
    _fn(h, "sd_status_name", c_char_p, st)
    _fn(h, "sd_last_error", c_char_p)
    _fn(h, "sd_version", c_char_p)
    _fn(h, "sd_image_free", None, P(sd_image))
    _fn(h, "sd_image_load", st, c_char_p, P(sd_image))
    _fn(h, "sd_image_save_png", st, c_char_p, P(sd_image), c_char_p)
    _fn(h, "sd_precision_from_name", c_bool, c_char_p, P(c_enum))
    _fn(h, "sd_precision_name", c_char_p, c_enum)
    _fn(h, "sd_model_default_params", None, P(sd_model_params))
    _fn(h, "sd_model_load", st, c_char_p, P(sd_model_params), P(c_void_p))
    _fn(h, "sd_model_free", None, c_void_p)
    _fn(h, "sd_model_get_info", st, c_void_p, P(sd_model_info))
    _fn(h, "sd_model_apply_loras_ex", st, c_void_p, P(sd_lora_spec), c_int, P(sd_lora_options))
    _fn(h, "sd_gen_default_params", None, P(sd_gen_params))
    _fn(h, "sd_txt2img", st, c_void_p, P(sd_gen_params), P(sd_image))
    _fn(h, "sd_img2img", st, c_void_p, P(sd_gen_params), P(sd_image), P(sd_image))
    _fn(h, "sd_stream_default_params", None, P(sd_stream_params))
    _fn(h, "sd_stream_create", st, c_void_p, P(sd_stream_params), P(c_void_p))
    _fn(h, "sd_stream_free", None, c_void_p)
    _fn(h, "sd_stream_set_prompt", st, c_void_p, c_char_p, c_char_p)
    _fn(h, "sd_stream_set_guidance", st, c_void_p, c_float, c_float)
    _fn(h, "sd_stream_set_prompts", st, c_void_p, P(sd_prompt_weight), c_int, c_char_p, c_enum, c_bool)
    _fn(h, "sd_stream_set_seeds", st, c_void_p, P(sd_seed_weight), c_int, c_enum, c_bool)
    _fn(h, "sd_stream_set_similarity_filter", st, c_void_p, c_float, c_int)
    _fn(h, "sd_stream_img2img", st, c_void_p, P(sd_image), P(sd_image))
    _fn(h, "sd_stream_txt2img", st, c_void_p, P(sd_image))
    _fn(h, "sd_stream_get_stats", st, c_void_p, P(sd_stream_stats))
    _fn(h, "sd_controlnet_load", st, c_void_p, c_char_p, P(c_void_p))
    _fn(h, "sd_controlnet_free", None, c_void_p)
    _fn(h, "sd_control_default", None, P(sd_control))
    _fn(h, "sd_preprocess_default_params", None, P(sd_preprocess_params))
    _fn(h, "sd_preprocess_from_name", c_bool, c_char_p, P(c_enum))
    _fn(h, "sd_control_preprocess", st, P(sd_image), P(sd_preprocess_params), P(sd_image))
    _fn(h, "sd_preprocess_name", c_char_p, c_enum)
    _fn(h, "sd_stream_control_count", c_int, c_void_p)
    _fn(h, "sd_stream_get_control", st, c_void_p, c_int, P(sd_stream_control))
    _fn(h, "sd_stream_set_control", st, c_void_p, c_int, P(sd_stream_control))


def decode(b: Optional[bytes]) -> str:
    return b.decode("utf-8", "replace") if b else ""


def encode(s: Optional[str]) -> Optional[bytes]:
    if s is None:
        return None
    if isinstance(s, os.PathLike):
        s = os.fspath(s)
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


# re-exported names for the other modules
__all__ = [
    "lib", "library_path", "padded", "decode", "encode", "sd_image", "sd_model_params", "sd_model_info",
    "sd_lora_spec", "sd_lora_options", "sd_gen_params", "sd_stream_params", "sd_stream_stats", "PROGRESS_FN",
    "STATUS_NAMES", "SD_OK", "SD_BACKEND_CPU", "SD_BACKEND_CUDA", "SD_RNG_TYPE_TORCH", "SD_RNG_TYPE_FAST",
    "SD_CFG_NONE", "SD_CFG_FULL", "SD_CFG_SELF", "SD_CFG_INITIALIZE", "SD_STREAM_MAX_STEPS", "SD_PRECISION_FP32",
    "SD_PRECISION_BF16", "SD_PRECISION_INT8", "SD_PRECISION_AUTO", "sd_control", "sd_preprocess_params",
    "sd_prompt_weight", "sd_seed_weight", "SD_STREAM_MAX_BLEND", "SD_BLEND_LINEAR", "SD_BLEND_SLERP",
    "sd_stream_control",
]
