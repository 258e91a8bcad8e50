"""streamdiff.Model: a loaded Stable Diffusion model (txt2img, img2img, LoRA, streams)."""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from . import _capi
from ._errors import ClosedError, check
from ._images import ImageLike, as_rgb_array, is_pil, output_like, parse_output_type, take_sd_image, to_sd_image

PathLike = Union[str, "os.PathLike[str]"]
ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class ModelInfo:
    """What the library tells about a loaded model (sd_model_info)."""

    arch: str               #: the model family: "sd1", "sd2" or "sdxl"
    source: str             #: the resolved path
    scheduler: str          #: the model's scheduler class, e.g. "LCMScheduler"
    prediction_type: str    #: "epsilon" or "v_prediction"
    native_size: int        #: pixels (UNet sample_size x VAE scale)
    vae_scale: int
    latent_channels: int
    context_dim: int
    has_taesd: bool
    lcm_guidance_embedding: bool  #: the UNet takes LCM's guidance embedding (time_cond_proj_dim)
    weight_bytes: int
    active_loras: int       #: LoRAs fused now (0: the base weights)


_BACKENDS = {"cpu": _capi.SD_BACKEND_CPU, "cuda": _capi.SD_BACKEND_CUDA}
_RNGS = {"torch": _capi.SD_RNG_TYPE_TORCH, "fast": _capi.SD_RNG_TYPE_FAST}


def _rng(name: str) -> int:
    try:
        return _RNGS[name]
    except KeyError:
        raise ValueError(f"rng must be 'torch' or 'fast', got {name!r}") from None


def _seed(seed: Optional[int]) -> int:
    if seed is None:
        return int.from_bytes(os.urandom(8), "little") >> 1
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    return seed


class Model:
    """A Stable Diffusion 1.x / 2.x model loaded by the C library.

    ``path`` is a diffusers folder (model_index.json), a single-file ``.safetensors`` checkpoint, or a Hugging
    Face model id present in the local HF cache (never downloads).

    Args:
        precision: CPU compute precision, ``"fp32"`` (the library's default), ``"bf16"`` (bf16 weights and
            matmul inputs with fp32 sums, on AMX / AVX512-BF16 when the CPU has them), ``"int8"``
            (experimental: W8A8 linears and convolutions on AMX-INT8 / AVX512-VNNI, the rest bf16) or
            ``"auto"`` (bf16 where those units outpace the fp32 ones); ``None`` = the library's default. See
            ``sd_precision``.
        keep_f16: keep F16 weights as F16 in memory (half the memory; the CPU converts per op).
        backend: ``"cpu"`` or ``"cuda"``.
        threads: CPU threads, 0 = all cores.
        taesd: a TAESD (AutoencoderTiny) folder or HF id for fast encode/decode (streams use it by default).
        variant: prefer ``<name>.<variant>.safetensors`` files (e.g. ``"fp16"``).
        config_dir: for single-file checkpoints, a diffusers folder (or id) with the configs and tokenizer.
        prediction_type: override, ``"epsilon"`` or ``"v_prediction"``.
        revision: HF cache revision for ids (default ``"main"``).
        check_finite: refuse weights that contain NaN/Inf.
        cuda_device: GPU index for ``backend="cuda"``.

    Raises :class:`streamdiff.StreamdiffError` (``NotFoundError`` for a missing model) with the library's
    message. Use as a context manager or call :meth:`close` to free the weights at once.
    """

    def __init__(self, path: PathLike, *, precision: Optional[str] = None, backend: str = "cpu", threads: int = 0,
                 taesd: Optional[PathLike] = None, keep_f16: bool = False, variant: Optional[str] = None,
                 config_dir: Optional[PathLike] = None, prediction_type: Optional[str] = None,
                 revision: Optional[str] = None, check_finite: bool = False, cuda_device: int = 0):
        self._h: Optional[int] = None
        self._lock = threading.RLock()
        self._streams: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._controlnets: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._loras: Dict[str, float] = {}
        self._lora_allow_unmatched = False
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be 'cpu' or 'cuda', got {backend!r}")
        lib = _capi.lib()
        p = _capi.padded(_capi.sd_model_params)
        lib.sd_model_default_params(ctypes.byref(p))
        p.backend = _BACKENDS[backend]
        p.n_threads = int(threads)
        p.cuda_device = int(cuda_device)
        p.keep_f16 = bool(keep_f16)
        if precision is not None:
            prec = ctypes.c_int()
            if not lib.sd_precision_from_name(_capi.encode(precision), ctypes.byref(prec)):
                raise ValueError(f"precision must be one of fp32, bf16, int8, auto (or None), got {precision!r}")
            p.precision = prec.value
        p.check_finite = bool(check_finite)
        for field, value in (("taesd", taesd), ("variant", variant), ("config_dir", config_dir),
                             ("prediction_type", prediction_type), ("revision", revision)):
            if value is not None:
                setattr(p, field, _capi.encode(value))
        h = ctypes.c_void_p()
        check(lib.sd_model_load(_capi.encode(path), ctypes.byref(p), ctypes.byref(h)))
        self._h = h.value
        self.path = os.fspath(path)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Frees the model (and closes the streams made from it). Later calls raise ClosedError."""
        for s in list(self._streams):  # (stream locks before the model lock, as a frame takes them)
            s.close()
        for c in list(self._controlnets):  # the nets' weights live on the model's backend
            c.close()
        with self._lock:
            if self._h is not None:
                _capi.lib().sd_model_free(self._h)
                self._h = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # streams keep their model alive, so none is open here
        try:
            if getattr(self, "_h", None) is not None:
                _capi.lib().sd_model_free(self._h)
                self._h = None
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._h is None

    def _handle(self) -> int:
        if self._h is None:
            raise ClosedError("the model is closed", 0, "closed")
        return self._h

    def __repr__(self) -> str:
        return f"streamdiff.Model({self.path!r}{', closed' if self.closed else ''})"

    # ------------------------------------------------------------------ info
    @property
    def info(self) -> ModelInfo:
        """Architecture, native size, scheduler, ... (see :class:`ModelInfo`)."""
        i = _capi.padded(_capi.sd_model_info)
        check(_capi.lib().sd_model_get_info(self._handle(), ctypes.byref(i)))
        d = _capi.decode
        return ModelInfo(d(i.arch), d(i.source), d(i.scheduler), d(i.prediction_type), i.native_size, i.vae_scale,
                         i.latent_channels, i.context_dim, bool(i.has_taesd), bool(i.lcm_guidance_embedding),
                         int(i.weight_bytes), int(i.active_loras))

    # ------------------------------------------------------------------ generation
    def _gen_params(self, prompt: str, negative_prompt: Optional[str], steps: int, width: int, height: int,
                    guidance_scale: float, sampler: Optional[str], schedule: Optional[str], seed: Optional[int],
                    batch_size: int, clip_skip: int, strength: float, eta: float, use_taesd: bool, rng: str,
                    progress: Optional[ProgressFn]):
        lib = _capi.lib()
        p = _capi.padded(_capi.sd_gen_params)
        lib.sd_gen_default_params(ctypes.byref(p))
        p.prompt = _capi.encode(prompt or "")
        p.negative_prompt = _capi.encode(negative_prompt) if negative_prompt else None
        p.steps, p.width, p.height = int(steps), int(width), int(height)
        p.guidance_scale = float(guidance_scale)
        p.sampler = _capi.encode(sampler) if sampler else None
        p.schedule = _capi.encode(schedule) if schedule else None
        p.seed = _seed(seed)
        p.batch_size, p.clip_skip = int(batch_size), int(clip_skip)
        p.strength, p.eta = float(strength), float(eta)
        p.use_taesd = bool(use_taesd)
        p.rng = _rng(rng)
        cb = None
        if progress is not None:
            def _cb(user, step, total, elapsed):  # called on this thread, GIL re-acquired by ctypes
                progress(step, total, elapsed)
            cb = _capi.PROGRESS_FN(_cb)
            p.progress = cb
        return p, cb

    def load_controlnet(self, path: PathLike):
        """Loads a ControlNet for this model (see :class:`streamdiff.ControlNet`)."""
        from ._control import ControlNet
        return ControlNet(self, path)

    _SDXL_SIZES = ("original_size", "crops_coords_top_left", "target_size", "negative_original_size",
                   "negative_crops_coords_top_left", "negative_target_size")

    @staticmethod
    def _sdxl_options(p, sdxl: Mapping[str, Any]):
        """SDXL's keyword arguments (ignored by SD1/SD2 models) into the parameters; returns what must stay alive."""
        keep = []
        for k, v in sdxl.items():
            if k in ("prompt_2", "negative_prompt_2"):
                if v is not None:
                    keep.append(_capi.encode(v))
                    setattr(p, k, keep[-1])
            elif k in Model._SDXL_SIZES:
                if v is not None:
                    a, b = (int(x) for x in v)
                    getattr(p, k)[0], getattr(p, k)[1] = a, b
            else:
                raise TypeError(f"unexpected keyword argument {k!r} (SDXL options: prompt_2, negative_prompt_2, "
                                f"{', '.join(Model._SDXL_SIZES)})")
        return keep

    def _run(self, p, cb, init: Optional[_capi.sd_image], like_pil: bool, controls=None):
        from ._control import control_array
        arr, n_ctl, keep = control_array(controls, need_image=True)
        if n_ctl:
            p.controls, p.n_controls = arr, n_ctl
        n = max(1, int(p.batch_size))
        outs = (_capi.sd_image * n)()
        lib = _capi.lib()
        with self._lock:
            h = self._handle()
            if init is None:
                st = lib.sd_txt2img(h, ctypes.byref(p), outs)
            else:
                st = lib.sd_img2img(h, ctypes.byref(p), ctypes.byref(init), outs)
        del cb, keep
        check(st)
        images = [output_like(take_sd_image(outs[k]), like_pil) for k in range(n)]
        return images[0] if n == 1 else images

    def txt2img(self, prompt: str, *, negative_prompt: Optional[str] = None, steps: int = 0, width: int = 0,
                height: int = 0, guidance_scale: float = 7.5, sampler: Optional[str] = None,
                schedule: Optional[str] = None, seed: Optional[int] = 42, eta: float = 0.0, clip_skip: int = 0,
                batch_size: int = 1, use_taesd: bool = False, rng: str = "torch", output_type: str = "pil",
                progress: Optional[ProgressFn] = None, controls: Optional[Sequence[Any]] = None, **sdxl):
        """Generates an image from `prompt` (the CLI's ``streamdiff txt2img`` with the same settings gives the
        same pixels; ``rng="torch"`` reproduces diffusers with ``torch.Generator("cpu").manual_seed(seed)``).

        Args:
            steps: 0 = the sampler's default (LCM/TCD 4, Euler with a turbo model 1, others 20).
            width, height: multiples of 8; 0 = the model's native size.
            guidance_scale: CFG scale; <= 1 turns CFG off (one UNet pass per step).
            sampler: None = the model's scheduler; ``"lcm"``, ``"tcd"``, ``"euler"``, ``"euler_a"``, ``"ddim"``,
                ``"dpm++2m"`` or a diffusers class name.
            schedule: None or ``"karras"`` (dpm++2m, euler).
            seed: None = random.
            eta: DDIM eta / TCD gamma (0..1).
            batch_size: images per call (one batched UNet pass); > 1 returns a list.
            output_type: ``"pil"`` (PIL.Image) or ``"np"`` (numpy (H, W, 3) uint8).
            progress: called as ``progress(step, total, elapsed_seconds)`` after every step.
            controls: ControlNets, a list of :class:`streamdiff.Control` (their effects add up).
            **sdxl: SDXL models (diffusers' names): ``prompt_2`` / ``negative_prompt_2`` (the second text
                encoder's prompts; None = prompt / negative_prompt) and the micro-conditioning
                ``original_size``, ``crops_coords_top_left``, ``target_size``, ``negative_original_size``,
                ``negative_crops_coords_top_left``, ``negative_target_size`` as (height, width) / (top, left)
                pairs (None = the default: the output size, crop (0, 0)).
        """
        like_pil = parse_output_type(output_type)
        p, cb = self._gen_params(prompt, negative_prompt, steps, width, height, guidance_scale, sampler, schedule,
                                 seed, batch_size, clip_skip, 0.8, eta, use_taesd, rng, progress)
        keep = self._sdxl_options(p, sdxl)
        out = self._run(p, cb, None, like_pil, controls)
        del keep
        return out

    def img2img(self, image: ImageLike, prompt: str, *, strength: float = 0.8,
                negative_prompt: Optional[str] = None, steps: int = 0, width: int = 0, height: int = 0,
                guidance_scale: float = 7.5, sampler: Optional[str] = None, schedule: Optional[str] = None,
                seed: Optional[int] = 42, eta: float = 0.0, clip_skip: int = 0, batch_size: int = 1,
                use_taesd: bool = False, rng: str = "torch", progress: Optional[ProgressFn] = None,
                controls: Optional[Sequence[Any]] = None, **sdxl):
        """Changes `image` (PIL.Image or numpy (H, W, 3) uint8) towards `prompt`; returns the same type.

        `strength` (0 < s <= 1) is how much to change it: diffusers runs the last int(steps*strength) steps.
        Width/height 0 = the image's size (rounded down to a multiple of 8). Other arguments (and the SDXL
        options) as :meth:`txt2img`.
        """
        like_pil = is_pil(image)
        arr = as_rgb_array(image)
        init = to_sd_image(arr)
        p, cb = self._gen_params(prompt, negative_prompt, steps, width, height, guidance_scale, sampler, schedule,
                                 seed, batch_size, clip_skip, strength, eta, use_taesd, rng, progress)
        keep = self._sdxl_options(p, sdxl)
        out = self._run(p, cb, init, like_pil, controls)
        del arr, keep
        return out

    # ------------------------------------------------------------------ LoRA
    @property
    def loras(self) -> Dict[str, float]:
        """The active LoRA set: {path: scale} (a copy)."""
        return dict(self._loras)

    def set_loras(self, loras: Union[Mapping[str, float], Iterable[Tuple[str, float]]], *,
                  allow_unmatched: Optional[bool] = None) -> None:
        """Replaces the active LoRA set (kohya/A1111, diffusers or PEFT files; {} removes all). The weights
        become base + the set, computed from the base weights: changing a scale needs no reload and removing
        all gives the base weights back exactly. Open streams re-encode their prompt with the new text
        encoder. On an error the previous set stays active."""
        items = list(loras.items()) if isinstance(loras, Mapping) else [(p, s) for p, s in loras]
        new = {os.fspath(p): float(s) for p, s in items}
        allow = self._lora_allow_unmatched if allow_unmatched is None else bool(allow_unmatched)
        specs = (_capi.sd_lora_spec * max(1, len(new)))()
        keep = []
        for k, (path, scale) in enumerate(new.items()):
            b = _capi.encode(path)
            keep.append(b)
            specs[k].path, specs[k].scale = b, scale
        opt = _capi.padded(_capi.sd_lora_options)
        opt.allow_unmatched = allow
        with self._lock:
            check(_capi.lib().sd_model_apply_loras_ex(self._handle(), specs, len(new), ctypes.byref(opt)))
            self._loras, self._lora_allow_unmatched = new, allow
            for s in list(self._streams):
                s._refresh_prompt()

    def load_lora(self, path: PathLike, scale: float = 1.0, *, allow_unmatched: Optional[bool] = None) -> None:
        """Adds a LoRA to the active set (or changes its scale) and applies the set."""
        new = dict(self._loras)
        new[os.fspath(path)] = float(scale)
        self.set_loras(new, allow_unmatched=allow_unmatched)

    def set_lora_scale(self, path: PathLike, scale: float) -> None:
        """Changes the scale of an active LoRA (live: no reload of the file)."""
        key = os.fspath(path)
        if key not in self._loras:
            raise KeyError(f"LoRA {key!r} is not loaded (active: {list(self._loras)})")
        self.load_lora(key, scale)

    def unload_lora(self, path: PathLike) -> None:
        """Removes one LoRA from the active set."""
        new = dict(self._loras)
        new.pop(os.fspath(path), None)
        self.set_loras(new)

    def clear_loras(self) -> None:
        """Removes every LoRA: the base weights come back bit for bit."""
        self.set_loras({})

    # ------------------------------------------------------------------ streams
    def stream(self, t_index_list: Sequence[int] = (32, 45), width: int = 512, height: int = 512, *,
               cfg_type: str = "self", guidance_scale: float = 1.2, delta: float = 1.0, seed: int = 2,
               num_inference_steps: int = 50, frame_buffer_size: int = 1, use_denoising_batch: bool = True,
               do_add_noise: bool = True, similarity_threshold: float = 0.0, max_skip_frames: int = 10,
               use_taesd: Optional[bool] = None, rng: str = "torch", use_graphs: bool = True,
               controls: Optional[Sequence[Any]] = None, control_preprocess: str = "none", canny_low: int = 100,
               canny_high: int = 200, scribble_threshold: int = 64):
        """A StreamDiffusion stream on this model (see :class:`streamdiff.Stream`); the arguments are
        StreamDiffusion's: ``t_index_list`` indexes the ``num_inference_steps``-step LCM schedule,
        ``cfg_type`` is ``"none"``, ``"full"``, ``"self"`` or ``"initialize"`` (residual CFG),
        ``similarity_threshold`` > 0 turns the similar-image filter on. ``use_taesd=None`` uses the model's
        TAESD when it has one. ``controls``: ControlNets (:class:`streamdiff.Control`; image None = made from
        each input frame with ``control_preprocess``); every stream-batch row takes its own frame's."""
        from ._stream import Stream
        return Stream(self, t_index_list=t_index_list, width=width, height=height, cfg_type=cfg_type,
                      guidance_scale=guidance_scale, delta=delta, seed=seed, num_inference_steps=num_inference_steps,
                      frame_buffer_size=frame_buffer_size, use_denoising_batch=use_denoising_batch,
                      do_add_noise=do_add_noise, similarity_threshold=similarity_threshold,
                      max_skip_frames=max_skip_frames, use_taesd=use_taesd, rng=rng, use_graphs=use_graphs,
                      controls=controls, control_preprocess=(control_preprocess, canny_low, canny_high,
                                                             scribble_threshold))


def load_image(path: PathLike, output_type: str = "pil"):
    """Reads a PNG or JPEG with the library's decoder (PIL.Image or numpy (H, W, 3) uint8)."""
    like_pil = parse_output_type(output_type)
    img = _capi.sd_image()
    check(_capi.lib().sd_image_load(_capi.encode(path), ctypes.byref(img)))
    return output_like(take_sd_image(img), like_pil)


def save_png(path: PathLike, image: ImageLike, parameters: Optional[str] = None) -> None:
    """Writes `image` as PNG with the library's encoder; `parameters` becomes an A1111-style text chunk."""
    arr = as_rgb_array(image)
    img = to_sd_image(arr)
    check(_capi.lib().sd_image_save_png(_capi.encode(path), ctypes.byref(img), _capi.encode(parameters)))
