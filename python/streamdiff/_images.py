"""Images between Python (PIL.Image or numpy HxWx3 uint8) and the library's sd_image (RGB bytes, row-major).

In: a C-contiguous ``uint8`` array of shape (H, W, 3) is handed to the library as it is (no copy); other
arrays are made contiguous (one copy); a PIL image is converted to RGB bytes (one copy).
Out: the library allocates the output bytes; they are wrapped as a numpy array without a copy and released
with ``sd_image_free`` when the last array using them is gone.
"""

from __future__ import annotations

import ctypes
from typing import Any, Tuple, Union

import numpy as np

from . import _capi

try:  # PIL is optional for numpy users
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover - exercised only without Pillow
    _PILImage = None

ImageLike = Union["np.ndarray", Any]  # numpy HxWx3 uint8 or PIL.Image.Image


def is_pil(x: Any) -> bool:
    return _PILImage is not None and isinstance(x, _PILImage.Image)


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """A C-contiguous (H, W, 3) uint8 view of `image` (the same memory when it already is one)."""
    if is_pil(image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a PIL.Image or a numpy array of shape (H, W, 3) uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an image array of shape (H, W, 3) (RGB), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array (0..255), got dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def to_sd_image(arr: np.ndarray) -> _capi.sd_image:
    """An sd_image that points into `arr` (which must stay alive while the library uses it)."""
    img = _capi.sd_image()
    img.height, img.width = int(arr.shape[0]), int(arr.shape[1])
    img.data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
    return img


class _Owned:
    """Owns library-allocated image bytes; frees them with sd_image_free when garbage collected."""

    __slots__ = ("img",)

    def __init__(self, img: _capi.sd_image):
        self.img = img

    def __del__(self):
        img, self.img = self.img, None
        if img is not None and img.data:
            try:
                _capi.lib().sd_image_free(ctypes.byref(img))
            except Exception:  # interpreter shutdown
                pass


def take_sd_image(img: _capi.sd_image) -> np.ndarray:
    """A (H, W, 3) uint8 array over the library-allocated bytes of `img` (no copy). The bytes are freed when
    the array (and every view of it) is gone; `img` must not be used or freed by the caller afterwards."""
    h, w = int(img.height), int(img.width)
    n = h * w * 3
    if not img.data or n <= 0:
        raise ValueError("the library returned an empty image")
    owned_img = _capi.sd_image(img.width, img.height, img.data)
    img.data = None
    buf = (ctypes.c_uint8 * n).from_address(ctypes.addressof(owned_img.data.contents))
    buf._owner = _Owned(owned_img)  # freed with the buffer, which every array view keeps alive
    return np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)


def to_pil(arr: np.ndarray) -> Any:
    if _PILImage is None:
        raise ImportError("Pillow is not installed: pass numpy arrays, or output_type='np'")
    return _PILImage.fromarray(arr, "RGB")


def output_like(arr: np.ndarray, like_pil: bool):
    return to_pil(arr) if like_pil else arr


def parse_output_type(output_type: str) -> bool:
    """True for PIL output ("pil"), False for numpy ("np" / "numpy")."""
    if output_type == "pil":
        return True
    if output_type in ("np", "numpy"):
        return False
    raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}")


def size_of(arr: np.ndarray) -> Tuple[int, int]:
    return int(arr.shape[1]), int(arr.shape[0])
