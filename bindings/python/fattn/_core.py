"""The array-library-neutral middle of the binding: validates Python arguments, turns arrays into
fattn_tensor_t views (no copy unless the last dimension is not contiguous), allocates outputs in
the layout of the inputs, and calls fattn_forward / fattn_backward on the right handle.

Array libraries plug in as an "array kind" (see _numpy_arrays.py and _torch_tensors.py) that
answers: is_mine(x), name, dtype_code(x) (None when unsupported), supported_dtypes,
element_strides(x) (None when unusable as is), contiguous(x), data_ptr(x), device(x),
empty_like(x), empty_lse(q) (float32 [B, H, N]), is_float32(x), handle(device) (a context
manager yielding the fattn handle to use, with its stream set), and attention(q, k, v, options)
(the public entry: autograd where the library has it).
"""
import ctypes
import math

from . import _library, errors


def invalid(message):
    return errors.InvalidArgumentError(errors.INVALID_ARGUMENT, message)


class Options:
    """The attention descriptor, validated on the Python side where the ABI cannot see intent
    (sm_scale=0 would silently mean "default" in the C descriptor)."""

    def __init__(self, causal=False, sm_scale=None, window=(-1, -1), deterministic=False):
        if sm_scale is not None and not (math.isfinite(sm_scale) and sm_scale > 0):
            raise invalid(f"sm_scale={sm_scale} must be a positive finite number (or None for 1/sqrt(head_dim))")
        try:
            window_left, window_right = (int(w) for w in window)
        except (TypeError, ValueError):
            raise invalid(f"window={window!r} must be a pair (left, right) of ints, -1 = unbounded") from None
        self.desc = _library.AttentionDesc(
            ctypes.sizeof(_library.AttentionDesc), int(bool(causal)),
            0.0 if sm_scale is None else float(sm_scale), window_left, window_right,
            int(bool(deterministic)))


def _view(kind, x, ndim):
    """fattn_tensor_t over x; a 3-D x (the LSE) gets a unit head_dim."""
    tensor = _library.Tensor()
    tensor.data = kind.data_ptr(x)
    tensor.dtype = _library.DTYPE_F32 if ndim == 3 else kind.dtype_code(x)
    shape = list(x.shape) + [1] * (4 - ndim)
    strides = list(kind.element_strides(x)) + [1] * (4 - ndim)
    for axis in range(4):
        tensor.shape[axis] = shape[axis]
        # An extent-1 axis is never stepped along; zero keeps odd strides out of the overflow checks.
        tensor.strides[axis] = strides[axis] if shape[axis] > 1 else 0
    tensor.strides[3] = 1
    return tensor


def _prepare(kind, x, name, device):
    if not kind.is_mine(x):
        raise invalid(f"{name} is a {type(x).__module__}.{type(x).__name__}; expected a {kind.name} like q")
    if x.ndim != 4:
        raise invalid(f"{name}.ndim={x.ndim}, expected 4: [batch, heads, seqlen, head_dim]")
    if kind.dtype_code(x) is None:
        raise invalid(f"{name}.dtype={x.dtype} is not supported; use {kind.supported_dtypes}")
    if kind.device(x) != device:
        raise invalid(f"{name} is on {kind.device(x)} but q is on {device}")
    if kind.element_strides(x) is None:
        x = kind.contiguous(x)
    return x


def _prepare_lse(kind, lse, q, device):
    if not kind.is_mine(lse):
        raise invalid(f"lse is a {type(lse).__name__}; expected a {kind.name} like q")
    if lse.ndim == 4 and lse.shape[3] == 1:
        lse = lse[..., 0]
    if lse.ndim != 3 or not kind.is_float32(lse):
        raise invalid(f"lse must be float32 of shape [batch, heads, seqlen] (as forward returns it), "
                      f"got {lse.dtype} {tuple(lse.shape)}")
    if kind.device(lse) != device:
        raise invalid(f"lse is on {kind.device(lse)} but q is on {device}")
    if kind.element_strides(lse) is None:
        lse = kind.contiguous(lse)
    return lse


def forward(kind, q, k, v, options, need_lse=True):
    """(out, lse): out like q, lse float32 [B, H, N] (None when need_lse is false)."""
    device = kind.device(q) if kind.is_mine(q) else None
    q, k, v = (_prepare(kind, x, name, device) for x, name in ((q, "q"), (k, "k"), (v, "v")))
    out = kind.empty_like(q)
    lse = kind.empty_lse(q) if need_lse else None
    views = [_view(kind, x, 4) for x in (q, k, v, out)]
    lse_view = ctypes.byref(_view(kind, lse, 3)) if need_lse else None
    with kind.handle(device) as handle:
        _library.check(_library.lib.fattn_forward(
            handle, ctypes.byref(options.desc), *(ctypes.byref(view) for view in views), lse_view))
    return out, lse


def backward(kind, q, k, v, out, dout, lse, options):
    """(dq, dk, dv) for the forward that produced out and lse; shaped like q, k, v."""
    device = kind.device(q) if kind.is_mine(q) else None
    named = ((q, "q"), (k, "k"), (v, "v"), (out, "out"), (dout, "dout"))
    q, k, v, out, dout = (_prepare(kind, x, name, device) for x, name in named)
    lse = _prepare_lse(kind, lse, q, device)
    dq, dk, dv = kind.empty_like(q), kind.empty_like(k), kind.empty_like(v)
    views = [_view(kind, x, 4) for x in (q, k, v, out, dout)]
    views.append(_view(kind, lse, 3))
    views += [_view(kind, x, 4) for x in (dq, dk, dv)]
    with kind.handle(device) as handle:
        _library.check(_library.lib.fattn_backward(
            handle, ctypes.byref(options.desc), *(ctypes.byref(view) for view in views)))
    return dq, dk, dv
