"""PyTorch tensors as fattn tensors, and the autograd Function behind fattn.attention.

Imported only when a torch.Tensor is passed: torch is not a dependency of fattn. CPU tensors run
on the CPU backend, CUDA tensors on the CUDA backend on their own device and on that device's
current stream, so fattn orders with the surrounding PyTorch work exactly like a PyTorch op.
"""
import contextlib
import sys

import torch

from . import _core, _library, errors

name = "torch.Tensor"
supported_dtypes = "torch.float32, torch.float16 or torch.bfloat16"

_DTYPE_CODES = {
    torch.float32: _library.DTYPE_F32,
    torch.float16: _library.DTYPE_F16,
    torch.bfloat16: _library.DTYPE_BF16,
}


def is_mine(x):
    return isinstance(x, torch.Tensor)


def dtype_code(x):
    return _DTYPE_CODES.get(x.dtype)


def is_float32(x):
    return x.dtype == torch.float32


def device(x):
    return x.device


def element_strides(x):
    if x.shape[-1] > 1 and x.stride(-1) != 1:
        return None
    return list(x.stride())


def contiguous(x):
    return x.contiguous()


def data_ptr(x):
    return x.data_ptr()


def empty_like(x):
    return torch.empty_like(x)  # preserve_format: a [B,N,H,D]-transposed input gets such an output


def empty_lse(q):
    return torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)


@contextlib.contextmanager
def handle(device):
    if device.type == "cpu":
        yield _library.handle(_library.BACKEND_CPU)
    elif device.type == "cuda":
        with torch.cuda.device(device):
            cuda_handle = _library.handle(_library.BACKEND_CUDA, device.index)
            stream = torch.cuda.current_stream(device).cuda_stream
            _library.check(_library.lib.fattn_set_stream(cuda_handle, stream))
            yield cuda_handle
    else:
        raise errors.UnsupportedError(
            errors.UNSUPPORTED, f"q is on {device}; fattn runs on cpu and cuda tensors only")


this_kind = sys.modules[__name__]  # this module is the "array kind" that _core works through


class AttentionFunction(torch.autograd.Function):
    """out = attention(q, k, v); saves the LSE so the backward recomputes nothing but P."""

    @staticmethod
    def forward(ctx, q, k, v, options):
        out, lse = _core.forward(this_kind, q, k, v, options)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = options
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _core.backward(this_kind, q, k, v, out, dout, lse, ctx.options)
        needed = ctx.needs_input_grad
        return (dq if needed[0] else None, dk if needed[1] else None, dv if needed[2] else None, None)


def attention(q, k, v, options):
    if torch.is_grad_enabled() and any(is_mine(x) and x.requires_grad for x in (q, k, v)):
        return AttentionFunction.apply(q, k, v, options)
    out, _ = _core.forward(this_kind, q, k, v, options, need_lse=False)
    return out
