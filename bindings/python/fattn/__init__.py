"""fattn: fused exact attention (FlashAttention-2 class), forward and backward, on NumPy arrays
(CPU) and PyTorch tensors (CPU or CUDA, with autograd), through libfattn's C ABI.

    from fattn import attention
    out = attention(q, k, v, causal=True)   # q, k, v: [batch, heads, seqlen, head_dim]

Inputs may have any strides with a contiguous last dimension, so [batch, seqlen, heads, head_dim]
data is passed as a .transpose(1, 2) view without a copy; k and v may have fewer heads than q
(grouped-query attention). Failures raise fattn.FattnError subclasses (see fattn.errors).
"""
import sys

from . import _core, _library
from ._version import __version__
from .errors import (BackendError, FattnError, InternalError, InvalidArgumentError, NoDeviceError,
                     OutOfMemoryError, UnsupportedError)

__all__ = [
    "attention", "forward", "backward", "library_version", "backend_available", "library_path",
    "FattnError", "InvalidArgumentError", "UnsupportedError", "OutOfMemoryError", "NoDeviceError",
    "BackendError", "InternalError", "__version__",
]

library_path = _library.path


def _kind_of(q):
    """The array kind that owns q. torch is imported only if the caller already imported it."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(q, torch.Tensor):
        from . import _torch_tensors
        return _torch_tensors
    from . import _numpy_arrays
    return _numpy_arrays


def attention(q, k, v, causal=False, sm_scale=None, window=(-1, -1), deterministic=False,
              warp_specialize=False):
    """softmax(sm_scale * q k^T + mask) v, shaped and laid out like q.

    q: [B, Hq, Nq, D]; k, v: [B, Hkv, Nk, D] with Hq % Hkv == 0. One dtype for all three.
    causal: bottom-right aligned causal mask (FlashAttention 2.1+ semantics).
    sm_scale: softmax scale; None means 1/sqrt(D).
    window: (left, right) sliding window around the diagonal, -1 = unbounded.
    deterministic: bit-identical gradients from run to run (the CPU backend always is).
    warp_specialize: accepted for compatibility with the Triton tutorial's signature; ignored.

    NumPy arrays return a NumPy array. PyTorch tensors return a tensor on the same device and are
    differentiable with respect to every input that requires grad.
    """
    del warp_specialize  # fattn chooses its kernels itself
    options = _core.Options(causal, sm_scale, window, deterministic)
    return _kind_of(q).attention(q, k, v, options)


def forward(q, k, v, causal=False, sm_scale=None, window=(-1, -1), deterministic=False):
    """(out, lse) without autograd: lse is float32 [B, Hq, Nq], the natural-log log-sum-exp of
    each row's scaled scores (-inf for a row that sees no key). Arguments as for attention()."""
    options = _core.Options(causal, sm_scale, window, deterministic)
    return _core.forward(_kind_of(q), q, k, v, options)


def backward(q, k, v, out, dout, lse, causal=False, sm_scale=None, window=(-1, -1),
             deterministic=False):
    """(dq, dk, dv): gradients of forward() given dout = dLoss/dout; the masking arguments must be
    those of the forward that produced out and lse."""
    options = _core.Options(causal, sm_scale, window, deterministic)
    return _core.backward(_kind_of(q), q, k, v, out, dout, lse, options)


def library_version():
    """The loaded libfattn's version string, e.g. "0.1.0"."""
    return _library.lib.fattn_version_string().decode()


def backend_available(backend):
    """True when the backend ("cpu" or "cuda") can run on this machine now."""
    codes = {"cpu": _library.BACKEND_CPU, "cuda": _library.BACKEND_CUDA}
    if backend not in codes:
        raise _core.invalid(f"backend={backend!r} must be 'cpu' or 'cuda'")
    return _library.backend_available(codes[backend])
