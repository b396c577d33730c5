"""NumPy arrays as fattn tensors: float32, float16, and bfloat16 when ml_dtypes is installed.
NumPy memory is host memory, so these always run on the CPU backend."""
import contextlib
import sys

import numpy as np

from . import _core, _library

name = "numpy.ndarray"

_DTYPE_CODES = {np.dtype(np.float32): _library.DTYPE_F32, np.dtype(np.float16): _library.DTYPE_F16}
try:
    import ml_dtypes

    _DTYPE_CODES[np.dtype(ml_dtypes.bfloat16)] = _library.DTYPE_BF16
    supported_dtypes = "float32, float16 or bfloat16 (ml_dtypes)"
except ImportError:
    supported_dtypes = "float32 or float16 (bfloat16 needs the ml_dtypes package)"


def is_mine(x):
    return isinstance(x, np.ndarray)


def dtype_code(x):
    return _DTYPE_CODES.get(x.dtype)


def is_float32(x):
    return x.dtype == np.float32


def device(x):
    return "cpu"


def element_strides(x):
    """Strides in elements, or None when NumPy's byte strides cannot be expressed (negative,
    not a whole number of elements, or a last dimension that is not contiguous)."""
    itemsize = x.itemsize
    if any(s < 0 or s % itemsize for s in x.strides):
        return None
    if x.shape[-1] > 1 and x.strides[-1] != itemsize:
        return None
    return [s // itemsize for s in x.strides]


def contiguous(x):
    return np.ascontiguousarray(x)


def data_ptr(x):
    return x.ctypes.data


def empty_like(x):
    return np.empty_like(x)  # order="K": the output keeps the input's layout


def empty_lse(q):
    return np.empty(q.shape[:3], dtype=np.float32)


@contextlib.contextmanager
def handle(device):
    yield _library.handle(_library.BACKEND_CPU)


def attention(q, k, v, options):
    out, _ = _core.forward(sys.modules[__name__], q, k, v, options, need_lse=False)
    return out
