"""The binding's contract around the computation: every failure raises the FattnError subclass of
its status with a message naming the argument, the library is found and version-checked at load,
and the handle cache reports a missing backend."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fattn
from fattn import _library, errors


def arrays(rng, shape=(1, 2, 8, 16), dtype=np.float32):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(3)]


BAD_CALLS = {
    "q not 4-D": (lambda q, k, v: fattn.attention(q[0], k, v), "q.ndim=3"),
    "k not an array": (lambda q, k, v: fattn.attention(q, k.tolist(), v), "k is a builtins.list"),
    "float64": (lambda q, k, v: fattn.attention(q.astype(np.float64), k, v), "q.dtype=float64"),
    "int32 v": (lambda q, k, v: fattn.attention(q, k, v.astype(np.int32)), "v.dtype=int32"),
    "dtypes differ": (lambda q, k, v: fattn.attention(q, k.astype(np.float16), v), "dtype"),
    "head_dim differs": (lambda q, k, v: fattn.attention(q, k[..., :8], v), "k.shape[3]=8"),
    "heads not a multiple": (lambda q, k, v: fattn.attention(q[:, :1].repeat(3, 1), k, v), "shape[1]"),
    "negative scale": (lambda q, k, v: fattn.attention(q, k, v, sm_scale=-1.0), "sm_scale=-1.0"),
    "zero scale": (lambda q, k, v: fattn.attention(q, k, v, sm_scale=0.0), "sm_scale=0.0"),
    "nan scale": (lambda q, k, v: fattn.attention(q, k, v, sm_scale=float("nan")), "sm_scale=nan"),
    "window not a pair": (lambda q, k, v: fattn.attention(q, k, v, window=3), "window=3"),
    "lse wrong dtype": (lambda q, k, v: fattn.backward(q, k, v, q, q, q[..., 0].astype(np.float16)), "lse must be float32"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_arguments_raise_invalid_argument_naming_it(rng, case):
    call, named = BAD_CALLS[case]
    with pytest.raises(fattn.InvalidArgumentError) as raised:
        call(*arrays(rng))
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, fattn.FattnError)
    assert raised.value.status == errors.INVALID_ARGUMENT
    assert named in str(raised.value) and raised.value.message == str(raised.value)


def test_library_message_is_this_threads_last_error(rng):
    q, k, v = arrays(rng)
    with pytest.raises(fattn.InvalidArgumentError) as raised:
        fattn.attention(q, k[..., :8], v)
    assert raised.value.message == _library.lib.fattn_last_error().decode()


@pytest.mark.parametrize("status,cls,builtin", [
    (errors.INVALID_ARGUMENT, fattn.InvalidArgumentError, ValueError),
    (errors.UNSUPPORTED, fattn.UnsupportedError, RuntimeError),
    (errors.OUT_OF_MEMORY, fattn.OutOfMemoryError, MemoryError),
    (errors.NO_DEVICE, fattn.NoDeviceError, RuntimeError),
    (errors.BACKEND, fattn.BackendError, RuntimeError),
    (errors.INTERNAL, fattn.InternalError, RuntimeError),
    (12345, fattn.FattnError, Exception),
])
def test_each_status_maps_to_its_exception(status, cls, builtin):
    error = errors.error_for_status(status, "message")
    assert type(error) is cls and isinstance(error, builtin) and isinstance(error, fattn.FattnError)
    assert error.status == status and str(error) == "message"
    assert _library.lib.fattn_status_string(status)  # the library names every code, even unknown


def test_cuda_handle_without_a_gpu_raises_no_device():
    if fattn.backend_available("cuda"):
        pytest.skip("a CUDA device is present")
    with pytest.raises(fattn.NoDeviceError) as raised:
        _library.handle(_library.BACKEND_CUDA, device_index=0)
    assert raised.value.message


def test_backend_available():
    assert fattn.backend_available("cpu")
    with pytest.raises(fattn.InvalidArgumentError, match="backend='tpu'"):
        fattn.backend_available("tpu")


def test_package_matches_library_version():
    assert fattn.__version__ == fattn.library_version()
    assert _library.lib.fattn_version_number() // 10000 == int(fattn.__version__.split(".")[0])


def test_major_version_mismatch_is_refused_at_load():
    with pytest.raises(ImportError, match="needs libfattn 0.x"):
        _library.check_version(10203, package_version="0.1.0")
    _library.check_version(304, package_version="0.1.0")  # a newer minor of the same major loads


def test_unloadable_fattn_library_is_reported():
    environment = dict(os.environ, FATTN_LIBRARY="/nonexistent/libfattn.so.0")
    result = subprocess.run([sys.executable, "-c", "import fattn"], env=environment,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "cannot load libfattn" in result.stderr and "/nonexistent/libfattn.so.0" in result.stderr
