"""ControlNet: :class:`ControlNet` (a loaded net), :class:`Control` (a net, its control image, scale and guidance
window) and :func:`control_preprocess` (canny / soft edges / scribble / invert control images made in C)."""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

from . import _capi
from ._errors import ClosedError, check
from ._images import ImageLike, as_rgb_array, is_pil, output_like, take_sd_image, to_sd_image

if TYPE_CHECKING:
    from ._model import Model

PathLike = Union[str, "os.PathLike[str]"]


class ControlNet:
    """A ControlNetModel loaded for one :class:`~streamdiff.Model` (``Model.load_controlnet``): a diffusers
    folder, a single-file v1.x ``.safetensors`` (``control_model.*`` keys) or an HF id in the local cache, on
    the model's backend and precision. A net made for another base model raises StreamdiffError at load. It is
    closed with its model (or earlier with :meth:`close`)."""

    def __init__(self, model: "Model", path: PathLike):
        self._model = model
        self._h: Optional[int] = None
        self._lock = threading.Lock()
        h = ctypes.c_void_p()
        with model._lock:
            check(_capi.lib().sd_controlnet_load(model._handle(), _capi.encode(path), ctypes.byref(h)))
        self._h = h.value
        self.path = os.fspath(path)
        model._controlnets.add(self)

    def close(self) -> None:
        """Frees the net. Generations and streams that use it must have finished."""
        with self._lock:
            if self._h is not None:
                _capi.lib().sd_controlnet_free(self._h)
                self._h = None

    def __enter__(self) -> "ControlNet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._h is None

    def _handle(self) -> int:
        if self._h is None:
            raise ClosedError("the ControlNet is closed", 0, "closed")
        return self._h

    def __repr__(self) -> str:
        return f"streamdiff.ControlNet({self.path!r}{', closed' if self.closed else ''})"


@dataclass
class Control:
    """One ControlNet of a generation: `image` (PIL.Image or numpy (H, W, 3) uint8; resized to the output size
    when it differs; for streams None = made from each input frame), its conditioning `scale` and the fraction
    of the steps it acts on, `start` .. `end` (diffusers' control_guidance_start / _end)."""

    net: ControlNet
    image: Optional[ImageLike] = None
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


def control_array(controls: Optional[Sequence[Control]], need_image: bool) -> Tuple[Any, int, List[Any]]:
    """(sd_control array or None, count, objects to keep alive during the call)."""
    if not controls:
        return None, 0, []
    arr = (_capi.sd_control * len(controls))()
    keep: List[Any] = [arr]
    for k, c in enumerate(controls):
        if not isinstance(c, Control):
            raise TypeError(f"controls[{k}] must be a streamdiff.Control, got {type(c).__name__}")
        _capi.lib().sd_control_default(ctypes.byref(arr[k]))
        arr[k].net = c.net._handle()
        if c.image is not None:
            a = as_rgb_array(c.image)
            img = to_sd_image(a)
            keep += [a, img]
            arr[k].image = ctypes.pointer(img)
        elif need_image:
            raise ValueError(f"controls[{k}]: a generation needs a control image")
        arr[k].scale, arr[k].guidance_start, arr[k].guidance_end = float(c.scale), float(c.start), float(c.end)
    return arr, len(controls), keep


def preprocess_params(kind: str, low: int, high: int, threshold: int) -> _capi.sd_preprocess_params:
    p = _capi.padded(_capi.sd_preprocess_params)
    lib = _capi.lib()
    lib.sd_preprocess_default_params(ctypes.byref(p))
    k = ctypes.c_int()
    if not lib.sd_preprocess_from_name(_capi.encode(kind), ctypes.byref(k)):
        raise ValueError(f"unknown control preprocessor {kind!r} (none, canny, softedge, scribble, invert, tile)")
    p.kind, p.canny_low, p.canny_high, p.threshold = k.value, int(low), int(high), int(threshold)
    return p


def control_preprocess(image: ImageLike, kind: str = "canny", *, low: int = 100, high: int = 200,
                       threshold: int = 64):
    """A control image made from `image` in C, without models; returns the input's type. ``"canny"``: OpenCV's
    cv2.Canny(image, low, high) exactly; ``"softedge"``: the Sobel magnitude scaled to 255; ``"scribble"``:
    soft edges >= `threshold`, 3 px strokes; ``"invert"``; ``"tile"`` / ``"none"``: the image itself."""
    p = preprocess_params(kind, low, high, threshold)
    arr = as_rgb_array(image)
    src = to_sd_image(arr)
    out = _capi.sd_image()
    check(_capi.lib().sd_control_preprocess(ctypes.byref(src), ctypes.byref(p), ctypes.byref(out)))
    return output_like(take_sd_image(out), is_pil(image))
