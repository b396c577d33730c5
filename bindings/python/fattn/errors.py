"""Exceptions raised by fattn: one class per fattn_status_t value, each also a subclass of the
built-in exception a Python user would catch for that kind of failure (ValueError for bad
arguments, MemoryError for allocation failures, RuntimeError for everything at run time)."""

SUCCESS = 0
INVALID_ARGUMENT = 10
UNSUPPORTED = 20
OUT_OF_MEMORY = 30
NO_DEVICE = 35
BACKEND = 40
INTERNAL = 90


class FattnError(Exception):
    """A failed fattn call. `status` is the fattn_status_t value, `message` the library's
    fattn_last_error() text (it names the offending argument and value)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidArgumentError(FattnError, ValueError):
    """FATTN_ERROR_INVALID_ARGUMENT: bad shape, stride, dtype, or tensors that disagree."""


class UnsupportedError(FattnError, NotImplementedError):
    """FATTN_ERROR_UNSUPPORTED: a valid request this backend or build cannot run."""


class OutOfMemoryError(FattnError, MemoryError):
    """FATTN_ERROR_OUT_OF_MEMORY: a host or device allocation failed; nothing was written."""


class NoDeviceError(FattnError, RuntimeError):
    """FATTN_ERROR_NO_DEVICE: CUDA asked for, but no usable GPU or no CUDA support built in."""


class BackendError(FattnError, RuntimeError):
    """FATTN_ERROR_BACKEND: the CUDA runtime or driver reported an error."""


class InternalError(FattnError, RuntimeError):
    """FATTN_ERROR_INTERNAL: a bug in fattn; please report it with the message."""


_CLASS_OF_STATUS = {
    INVALID_ARGUMENT: InvalidArgumentError,
    UNSUPPORTED: UnsupportedError,
    OUT_OF_MEMORY: OutOfMemoryError,
    NO_DEVICE: NoDeviceError,
    BACKEND: BackendError,
    INTERNAL: InternalError,
}


def error_for_status(status, message):
    """The exception to raise for a non-success status; unknown codes (from a newer library)
    still raise a FattnError."""
    return _CLASS_OF_STATUS.get(status, FattnError)(status, message)
