"""streamdiff.Stream: StreamDiffusion (stream batch, residual CFG, similarity filter) on a Model."""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from . import _capi
from ._errors import ClosedError, check
from ._images import ImageLike, as_rgb_array, is_pil, output_like, parse_output_type, take_sd_image, to_sd_image

if TYPE_CHECKING:
    from ._model import Model

_CFG = {"none": _capi.SD_CFG_NONE, "full": _capi.SD_CFG_FULL, "self": _capi.SD_CFG_SELF,
        "initialize": _capi.SD_CFG_INITIALIZE}
_RNGS = {"torch": _capi.SD_RNG_TYPE_TORCH, "fast": _capi.SD_RNG_TYPE_FAST}
_BLEND = {"linear": _capi.SD_BLEND_LINEAR, "slerp": _capi.SD_BLEND_SLERP}


def _blend_mode(name: str) -> int:
    if name not in _BLEND:
        raise ValueError(f"interpolation method must be 'linear' or 'slerp', got {name!r}")
    return _BLEND[name]


@dataclass(frozen=True)
class StreamStats:
    """sd_stream_stats: counters and moving averages of a stream."""

    frames_in: int
    frames_out: int
    frames_skipped: int
    frames_dropped: int
    fps: float
    latency_ms: float
    inference_ms: float


class Stream:
    """A StreamDiffusion stream: one UNet call per frame with ``len(t_index_list)`` frames in flight.

    Made by :meth:`Model.stream`. Typical use (StreamDiffusion's README, with streamdiff)::

        stream = model.stream(t_index_list=[32, 45], width=512, height=512, cfg_type="self")
        stream.prepare("a cat", guidance_scale=1.2, delta=1.0)
        for _ in range(len(stream.t_index_list) - 1):   # warm up the stream batch
            stream(frame)
        out = stream(frame)        # img2img: PIL.Image in -> PIL.Image out, numpy in -> numpy out
        out = stream()             # txt2img frame (also stream.txt2img())

    The output of call k belongs to the frame of call k - (len(t_index_list) - 1) (the stream batch delay),
    exactly as in StreamDiffusion. Errors raise :class:`streamdiff.StreamdiffError` with the library's
    message; calls after :meth:`close` raise :class:`streamdiff.ClosedError`.
    """

    def __init__(self, model: "Model", *, t_index_list: Sequence[int], width: int, height: int, cfg_type: str,
                 guidance_scale: float, delta: float, seed: int, num_inference_steps: int, frame_buffer_size: int,
                 use_denoising_batch: bool, do_add_noise: bool, similarity_threshold: float, max_skip_frames: int,
                 use_taesd: Optional[bool], rng: str, use_graphs: bool, controls=None,
                 control_preprocess=("none", 100, 200, 64)):
        if cfg_type not in _CFG:
            raise ValueError(f"cfg_type must be one of none, full, self, initialize; got {cfg_type!r}")
        if rng not in _RNGS:
            raise ValueError(f"rng must be 'torch' or 'fast', got {rng!r}")
        self._model = model
        self._h: Optional[int] = None
        self._lock = threading.RLock()
        self._prompt: Optional[str] = None
        self._negative = ""
        self._prompt_list: Optional[list] = None  # [(text, weight)], method, normalize: blending (or None)
        self._prompt_blend = ("slerp", True)
        self._seed_list: Optional[list] = None
        self._seed_blend = ("linear", True)
        self._cfg: Dict[str, Any] = dict(
            t_index_list=[int(t) for t in t_index_list], width=int(width), height=int(height), cfg_type=cfg_type,
            guidance_scale=float(guidance_scale), delta=float(delta), seed=int(seed),
            num_inference_steps=int(num_inference_steps), frame_buffer_size=int(frame_buffer_size),
            use_denoising_batch=bool(use_denoising_batch), do_add_noise=bool(do_add_noise),
            similarity_threshold=float(similarity_threshold), max_skip_frames=int(max_skip_frames),
            use_taesd=use_taesd, rng=rng, use_graphs=bool(use_graphs), controls=list(controls or []),
            control_preprocess=tuple(control_preprocess))
        self._h = self._create(self._cfg)
        model._streams.add(self)

    # ------------------------------------------------------------------ the C stream
    def _params(self, c: Dict[str, Any]):
        lib = _capi.lib()
        p = _capi.padded(_capi.sd_stream_params)
        lib.sd_stream_default_params(ctypes.byref(p))
        t = c["t_index_list"]
        if not 1 <= len(t) <= _capi.SD_STREAM_MAX_STEPS:
            raise ValueError(f"t_index_list needs 1 to {_capi.SD_STREAM_MAX_STEPS} entries, got {len(t)}")
        for k, v in enumerate(t):
            p.t_index_list[k] = v
        p.n_t_index = len(t)
        p.width, p.height = c["width"], c["height"]
        p.num_inference_steps = c["num_inference_steps"]
        p.frame_buffer_size = c["frame_buffer_size"]
        p.use_denoising_batch, p.do_add_noise = c["use_denoising_batch"], c["do_add_noise"]
        p.cfg_type = _CFG[c["cfg_type"]]
        p.guidance_scale, p.delta = c["guidance_scale"], c["delta"]
        if not 0 <= c["seed"] < 2**64:
            raise ValueError(f"seed must be in [0, 2^64), got {c['seed']}")
        p.seed = c["seed"]
        p.similarity_threshold, p.max_skip_frames = c["similarity_threshold"], c["max_skip_frames"]
        if c["use_taesd"] is not None:
            p.use_taesd = bool(c["use_taesd"])
        p.rng = _RNGS[c["rng"]]
        p.use_graphs = c["use_graphs"]
        p.drop_old_frames = False
        return p

    def _create(self, c: Dict[str, Any]) -> int:
        from ._control import control_array, preprocess_params
        p = self._params(c)
        arr, n_ctl, keep = control_array(c["controls"], need_image=False)  # read by sd_stream_create only
        if n_ctl:
            p.controls, p.n_controls = arr, n_ctl
            p.control_preprocess = preprocess_params(*c["control_preprocess"])
        h = ctypes.c_void_p()
        with self._model._lock:
            check(_capi.lib().sd_stream_create(self._model._handle(), ctypes.byref(p), ctypes.byref(h)))
        for k, live in c.get("control_live", {}).items():  # live ControlNet settings survive a rebuild
            st = _capi.lib().sd_stream_set_control(h.value, k, ctypes.byref(live))
            if st != _capi.SD_OK:
                _capi.lib().sd_stream_free(h.value)
                check(st)
        return h.value

    # ------------------------------------------------------------------ ControlNets, live
    def get_control(self, index: int = 0) -> Dict[str, Any]:
        """The settings of ControlNet `index` (the order of ``controls``) now: scale, start, end (its guidance
        window), preprocess, low, high (canny thresholds), threshold (scribble) and from_frame (whether its
        control image is made from each input frame; else a fixed image, and preprocess has no effect)."""
        lib = _capi.lib()
        c = _capi.padded(_capi.sd_stream_control)
        with self._lock:
            check(lib.sd_stream_get_control(self._handle(), int(index), ctypes.byref(c)))
        return dict(scale=c.scale, start=c.guidance_start, end=c.guidance_end,
                    preprocess=_capi.decode(lib.sd_preprocess_name(c.preprocess.kind)),
                    low=c.preprocess.canny_low, high=c.preprocess.canny_high, threshold=c.preprocess.threshold,
                    from_frame=bool(c.from_frame))

    def set_control(self, index: int = 0, *, scale: Optional[float] = None, start: Optional[float] = None,
                    end: Optional[float] = None, preprocess: Optional[str] = None, low: Optional[int] = None,
                    high: Optional[int] = None, threshold: Optional[int] = None) -> None:
        """Live settings of ControlNet `index` from the next frame on (what is not given stays): conditioning
        `scale` (0..10), guidance window `start` < `end` (0..1), and how its control image is made from each
        frame: `preprocess` (none, canny, softedge, scribble, invert, tile) with canny `low` / `high` or the
        scribble `threshold`. No allocation in the library; bad values raise InvalidArgumentError and change
        nothing. Kept when the stream is rebuilt (a new t_index_list, ...)."""
        from ._control import preprocess_params
        lib = _capi.lib()
        with self._lock:
            h = self._handle()
            c = _capi.padded(_capi.sd_stream_control)
            check(lib.sd_stream_get_control(h, int(index), ctypes.byref(c)))
            if scale is not None:
                c.scale = float(scale)
            if start is not None:
                c.guidance_start = float(start)
            if end is not None:
                c.guidance_end = float(end)
            pp = c.preprocess
            kind = preprocess if preprocess is not None else _capi.decode(lib.sd_preprocess_name(pp.kind))
            c.preprocess = preprocess_params(kind, pp.canny_low if low is None else low,
                                             pp.canny_high if high is None else high,
                                             pp.threshold if threshold is None else threshold)
            check(lib.sd_stream_set_control(h, int(index), ctypes.byref(c)))
            self._cfg.setdefault("control_live", {})[int(index)] = c

    def _handle(self) -> int:
        if self._h is None:
            raise ClosedError("the stream is closed", 0, "closed")
        return self._h

    def _refresh_prompt(self) -> None:
        """Gives a new C stream the prompt (or the blended prompts) and the seed list."""
        if self._h is None:
            return
        if self._prompt_list is not None:
            self._set_prompts(self._prompt_list, self._negative, *self._prompt_blend)
        elif self._prompt is not None:
            check(_capi.lib().sd_stream_set_prompt(self._h, _capi.encode(self._prompt), _capi.encode(self._negative)))
        if self._seed_list is not None:
            self._set_seeds(self._seed_list, *self._seed_blend)

    def _set_prompts(self, items, negative: str, method: str, normalize: bool) -> None:
        items = [(str(t), float(w)) for t, w in items]
        arr = (_capi.sd_prompt_weight * max(1, len(items)))(
            *[_capi.sd_prompt_weight(_capi.encode(t), w) for t, w in items])
        check(_capi.lib().sd_stream_set_prompts(self._handle(), arr, len(items), _capi.encode(negative),
                                                _blend_mode(method), bool(normalize)))

    def _set_seeds(self, items, method: str, normalize: bool) -> None:
        items = [(int(s), float(w)) for s, w in items]
        for s, _ in items:
            if not 0 <= s < 2**64:
                raise ValueError(f"seed must be in [0, 2^64), got {s}")
        arr = (_capi.sd_seed_weight * max(1, len(items)))(*[_capi.sd_seed_weight(s, w) for s, w in items])
        check(_capi.lib().sd_stream_set_seeds(self._handle(), arr, len(items), _blend_mode(method), bool(normalize)))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Frees the stream. Later calls raise ClosedError."""
        with self._lock:
            if self._h is not None:
                _capi.lib().sd_stream_free(self._h)
                self._h = None
        self._model._streams.discard(self)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_h", None) is not None:
                _capi.lib().sd_stream_free(self._h)
                self._h = None
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._h is None

    @property
    def model(self) -> "Model":
        return self._model

    @property
    def t_index_list(self) -> list:
        return list(self._cfg["t_index_list"])

    @property
    def width(self) -> int:
        return self._cfg["width"]

    @property
    def height(self) -> int:
        return self._cfg["height"]

    @property
    def prompt(self) -> Optional[str]:
        return self._prompt

    @property
    def settings(self) -> Dict[str, Any]:
        """The stream's current settings (a copy)."""
        return dict(self._cfg, t_index_list=list(self._cfg["t_index_list"]))

    def __repr__(self) -> str:
        c = self._cfg
        return (f"streamdiff.Stream(t_index_list={c['t_index_list']}, {c['width']}x{c['height']}, "
                f"cfg_type={c['cfg_type']!r}{', closed' if self.closed else ''})")

    # ------------------------------------------------------------------ StreamDiffusion's calls
    def prepare(self, prompt: str, negative_prompt: str = "", *, guidance_scale: Optional[float] = None,
                delta: Optional[float] = None, num_inference_steps: Optional[int] = None,
                seed: Optional[int] = None) -> None:
        """StreamDiffusion's ``prepare``: sets the prompt (encoded once, its cross-attention K/V cached) and,
        when given, the guidance scale and RCFG delta. A new ``num_inference_steps`` or ``seed`` rebuilds the
        stream (new noise and schedule, empty buffer), as StreamDiffusion's prepare does."""
        rebuild = {}
        if num_inference_steps is not None and int(num_inference_steps) != self._cfg["num_inference_steps"]:
            rebuild["num_inference_steps"] = int(num_inference_steps)
        if seed is not None and int(seed) != self._cfg["seed"]:
            rebuild["seed"] = int(seed)
        with self._lock:
            if rebuild:
                if "seed" in rebuild:  # a single seed replaces a seed list
                    self._seed_list = None
                self._rebuild(rebuild)
            self.update(prompt=prompt, negative_prompt=negative_prompt, guidance=guidance_scale, delta=delta)

    def update_prompt(self, prompt: str, negative_prompt: Optional[str] = None) -> None:
        """StreamDiffusion's ``update_prompt``: a new prompt from the next frame on."""
        self.update(prompt=prompt, negative_prompt=negative_prompt)

    def update(self, *, prompt: Optional[str] = None, negative_prompt: Optional[str] = None,
               guidance: Optional[float] = None, delta: Optional[float] = None,
               t_index_list: Optional[Sequence[int]] = None, similarity_threshold: Optional[float] = None,
               max_skip_frames: Optional[int] = None, guidance_scale: Optional[float] = None) -> None:
        """Live changes, effective from the next frame: prompt, guidance (scale), RCFG delta, similarity
        filter. A new ``t_index_list`` rebuilds the stream (its batch has one row per entry), keeping the
        prompt and the other settings; frames in flight are dropped."""
        if guidance is None:
            guidance = guidance_scale
        lib = _capi.lib()
        with self._lock:
            h = self._handle()
            if t_index_list is not None and [int(t) for t in t_index_list] != self._cfg["t_index_list"]:
                self._rebuild({"t_index_list": [int(t) for t in t_index_list]})
                h = self._handle()
            if prompt is not None or negative_prompt is not None:
                new_prompt = prompt if prompt is not None else (self._prompt or "")
                new_neg = negative_prompt if negative_prompt is not None else self._negative
                if self._prompt_list is not None and prompt is None:  # a new negative for the blended prompts
                    self._set_prompts(self._prompt_list, new_neg, *self._prompt_blend)
                else:
                    check(lib.sd_stream_set_prompt(h, _capi.encode(new_prompt), _capi.encode(new_neg)))
                    self._prompt_list = None
                self._prompt, self._negative = new_prompt, new_neg
            if guidance is not None or delta is not None:
                g = float(guidance) if guidance is not None else self._cfg["guidance_scale"]
                d = float(delta) if delta is not None else self._cfg["delta"]
                check(lib.sd_stream_set_guidance(h, g, d))
                self._cfg["guidance_scale"], self._cfg["delta"] = g, d
            if similarity_threshold is not None or max_skip_frames is not None:
                self._set_filter(similarity_threshold, max_skip_frames)

    def update_stream_params(self, *, prompt_list: Optional[Sequence] = None, negative_prompt: Optional[str] = None,
                             interpolation_method: str = "slerp", seed_list: Optional[Sequence] = None,
                             seed_interpolation_method: str = "linear", normalize_prompt_weights: bool = True,
                             normalize_seed_weights: bool = True, guidance_scale: Optional[float] = None,
                             delta: Optional[float] = None, t_index_list: Optional[Sequence[int]] = None) -> None:
        """The StreamDiffusion forks' ``update_stream_params`` blending: ``prompt_list`` = [(prompt, weight), ...]
        blended into one embedding (``interpolation_method`` "slerp" for two prompts, else "linear": the weighted
        sum), ``seed_list`` = [(seed, weight), ...] blended into the initial noise. Weights >= 0 with a positive
        sum, divided by their sum unless ``normalize_*_weights`` is False; at most 8 entries. Each prompt is
        encoded once (a weight change only re-blends); formulas in docs/blending.md. Live from the next frame."""
        with self._lock:
            self.update(guidance=guidance_scale, delta=delta, t_index_list=t_index_list)
            if prompt_list is not None:
                items = [(str(t), float(w)) for t, w in prompt_list]
                neg = self._negative if negative_prompt is None else negative_prompt
                self._set_prompts(items, neg, interpolation_method, normalize_prompt_weights)
                self._prompt_list, self._negative = items, neg
                self._prompt_blend = (interpolation_method, bool(normalize_prompt_weights))
            elif negative_prompt is not None:
                self.update(negative_prompt=negative_prompt)
            if seed_list is not None:
                items = [(int(s), float(w)) for s, w in seed_list]
                self._set_seeds(items, seed_interpolation_method, normalize_seed_weights)
                self._seed_list = items
                self._seed_blend = (seed_interpolation_method, bool(normalize_seed_weights))

    def update_prompt_weights(self, prompt_weights: Sequence[float], interpolation_method: Optional[str] = None) -> None:
        """New weights for the current prompt list (no prompt is encoded again), as the forks' method."""
        self._reweight("prompt", prompt_weights, interpolation_method)

    def update_seed_weights(self, seed_weights: Sequence[float], interpolation_method: Optional[str] = None) -> None:
        """New weights for the current seed list (no noise drawn again)."""
        self._reweight("seed", seed_weights, interpolation_method)

    def _reweight(self, kind: str, weights: Sequence[float], method: Optional[str]) -> None:
        with self._lock:
            cur, (m, norm) = getattr(self, f"_{kind}_list"), getattr(self, f"_{kind}_blend")
            if cur is None or len(weights) != len(cur):
                raise ValueError(f"update_{kind}_weights: {len(weights)} weights for a {kind} list of {len(cur or [])}")
            new = [(x, w) for (x, _), w in zip(cur, weights)]
            if kind == "prompt":
                self.update_stream_params(prompt_list=new, interpolation_method=method or m,
                                          normalize_prompt_weights=norm)
            else:
                self.update_stream_params(seed_list=new, seed_interpolation_method=method or m,
                                          normalize_seed_weights=norm)

    def enable_similar_image_filter(self, threshold: float = 0.98, max_skip_frame: int = 10) -> None:
        """StreamDiffusion's stochastic similar-image filter: a frame whose cosine similarity to the last
        processed one exceeds `threshold` is skipped (the previous output repeats), at most `max_skip_frame`
        times in a row."""
        with self._lock:
            self._set_filter(threshold, max_skip_frame)

    def disable_similar_image_filter(self) -> None:
        with self._lock:
            self._set_filter(0.0, None)

    def _set_filter(self, threshold: Optional[float], max_skip: Optional[int]) -> None:
        t = float(threshold) if threshold is not None else self._cfg["similarity_threshold"]
        m = int(max_skip) if max_skip is not None else self._cfg["max_skip_frames"]
        check(_capi.lib().sd_stream_set_similarity_filter(self._handle(), t, m))
        self._cfg["similarity_threshold"], self._cfg["max_skip_frames"] = t, m

    def _rebuild(self, changes: Dict[str, Any]) -> None:
        cfg = dict(self._cfg, **changes)
        h = self._create(cfg)  # raises (old stream kept) when the new settings are refused
        old, self._h, self._cfg = self._h, h, cfg
        if old is not None:
            _capi.lib().sd_stream_free(old)
        self._refresh_prompt()

    # ------------------------------------------------------------------ frames
    def img2img(self, image: ImageLike):
        """One img2img frame: PIL.Image or numpy (H, W, 3) uint8 in (fitted to the stream size: center crop
        and resize when it differs), the same type out (a numpy input array is read in place, no copy)."""
        like_pil = is_pil(image)
        arr = as_rgb_array(image)
        src = to_sd_image(arr)
        out = _capi.sd_image()
        with self._lock:
            h = self._handle()
            with self._model._lock:
                st = _capi.lib().sd_stream_img2img(h, ctypes.byref(src), ctypes.byref(out))
        del arr
        check(st)
        return output_like(take_sd_image(out), like_pil)

    def txt2img(self, output_type: str = "pil"):
        """One txt2img frame from the stream's own noise (StreamDiffusion's ``txt2img``)."""
        like_pil = parse_output_type(output_type)
        out = _capi.sd_image()
        with self._lock:
            h = self._handle()
            with self._model._lock:
                st = _capi.lib().sd_stream_txt2img(h, ctypes.byref(out))
        check(st)
        return output_like(take_sd_image(out), like_pil)

    def __call__(self, image: Optional[ImageLike] = None):
        """``stream(image)``: an img2img frame; ``stream()``: a txt2img frame (as StreamDiffusion)."""
        return self.txt2img() if image is None else self.img2img(image)

    @property
    def stats(self) -> StreamStats:
        s = _capi.padded(_capi.sd_stream_stats)
        check(_capi.lib().sd_stream_get_stats(self._handle(), ctypes.byref(s)))
        return StreamStats(int(s.frames_in), int(s.frames_out), int(s.frames_skipped), int(s.frames_dropped),
                           float(s.fps), float(s.latency_ms), float(s.inference_ms))
