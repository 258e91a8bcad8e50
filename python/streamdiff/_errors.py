"""Exceptions carrying the library's own error message (sd_last_error)."""

from __future__ import annotations

from . import _capi


class StreamdiffError(RuntimeError):
    """A failed library call. ``str(e)`` is the library's message (``sd_last_error()``); ``status`` is the
    ``sd_status`` code and ``status_name`` its name, e.g. ``"SD_ERR_NOT_FOUND"``."""

    def __init__(self, message: str, status: int = 0, status_name: str = ""):
        super().__init__(message)
        self.status = status
        self.status_name = status_name


class InvalidArgumentError(StreamdiffError, ValueError):
    """SD_ERR_INVALID_ARGUMENT / SD_ERR_SHAPE: a parameter or shape the library refuses."""


class NotFoundError(StreamdiffError, FileNotFoundError):
    """SD_ERR_NOT_FOUND: a model, file, tensor or key is missing."""


class UnsupportedError(StreamdiffError):
    """SD_ERR_UNSUPPORTED: valid input this build does not handle."""


class ClosedError(StreamdiffError):
    """A call on a model or stream after close()."""


_BY_STATUS = {1: InvalidArgumentError, 6: NotFoundError, 7: InvalidArgumentError, 5: UnsupportedError}


def error_for(status: int, context: str = "") -> StreamdiffError:
    """The exception for a failed call: the library's message of this thread's last error."""
    lib = _capi.lib()
    msg = _capi.decode(lib.sd_last_error())
    name = _capi.decode(lib.sd_status_name(status)) or f"status {status}"
    if not msg:
        msg = name
    if context:
        msg = f"{context}: {msg}"
    return _BY_STATUS.get(status, StreamdiffError)(msg, status, name)


def check(status: int, context: str = "") -> None:
    """Raises the matching StreamdiffError when `status` is not SD_OK."""
    if status != _capi.SD_OK:
        raise error_for(status, context)
