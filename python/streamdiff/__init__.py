"""streamdiff: real-time diffusion (StreamDiffusion, LCM, TCD, SD-Turbo) on the streamdiff C library.

A thin ctypes binding of the library's public header (include/streamdiff.h)::

    import streamdiff
    model = streamdiff.Model("path/or/hf-id", threads=0)
    image = model.txt2img("a red fox", steps=2, width=512, height=512, seed=7)      # PIL.Image
    stream = model.stream(t_index_list=[32, 45], width=512, height=512)
    stream.prepare("a cat")
    out = stream(image)                                                           # PIL in, PIL out

Compute runs in the C library with the GIL released. Errors raise :class:`StreamdiffError` (subclasses
:class:`InvalidArgumentError`, :class:`NotFoundError`, :class:`UnsupportedError`, :class:`ClosedError`)
carrying the library's message. The library is found next to this package (``pip install .``), at
``$STREAMDIFF_LIBRARY`` (a build tree's ``libstreamdiff.so`` or its folder) or on the system path.
"""

from __future__ import annotations

from . import _capi
from ._control import Control, ControlNet, control_preprocess
from ._errors import ClosedError, InvalidArgumentError, NotFoundError, StreamdiffError, UnsupportedError
from ._model import Model, ModelInfo, load_image, save_png
from ._stream import Stream, StreamStats

try:
    from importlib.metadata import PackageNotFoundError, version as _dist_version
    try:
        __version__ = _dist_version("streamdiff")
    except PackageNotFoundError:  # used from a source tree
        __version__ = "0+source"
except ImportError:  # pragma: no cover
    __version__ = "0+source"

#: Sampler names the library accepts (``sampler=`` of txt2img/img2img); diffusers class names work too.
SAMPLERS = ("lcm", "tcd", "euler", "euler_a", "ddim", "dpm++2m")


def library_version() -> str:
    """The C library's version (``sd_version()``), e.g. ``"0.1.0"``."""
    return _capi.decode(_capi.lib().sd_version())


def library_path() -> str:
    """The path of the loaded libstreamdiff shared library."""
    _capi.lib()
    return _capi.library_path() or ""


__all__ = [
    "Model", "ModelInfo", "Stream", "StreamStats", "StreamdiffError", "InvalidArgumentError", "NotFoundError",
    "UnsupportedError", "ClosedError", "load_image", "save_png", "library_version", "library_path", "SAMPLERS",
    "Control", "ControlNet", "control_preprocess",
    "__version__",
]
