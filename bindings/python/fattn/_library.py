"""libfattn through ctypes: finding and loading the shared library, the C ABI's structs and
prototypes, status checking, and the per-thread cache of handles.

Search order for the library: the FATTN_LIBRARY environment variable (a path; when set, nothing
else is tried, so a wrong path is reported rather than silently replaced), then a copy shipped
inside this package (pip install puts one there), then the system's (ldconfig, LD_LIBRARY_PATH).
ctypes releases the GIL for the duration of every call, so long CPU calls do not block Python.
"""
import ctypes
import ctypes.util
import glob
import os
import threading

from . import errors
from ._version import __version__

BACKEND_AUTO, BACKEND_CPU, BACKEND_CUDA = 0, 1, 2
DTYPE_F32, DTYPE_F16, DTYPE_BF16 = 0, 1, 2


class Tensor(ctypes.Structure):
    """fattn_tensor_t: 80 bytes on LP64; strides in elements."""
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("shape", ctypes.c_int64 * 4),
        ("strides", ctypes.c_int64 * 4),
    ]


class AttentionDesc(ctypes.Structure):
    """fattn_attention_desc_t, version 0.1 (struct_size tells the library which fields exist)."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("causal", ctypes.c_int32),
        ("softmax_scale", ctypes.c_float),
        ("window_left", ctypes.c_int32),
        ("window_right", ctypes.c_int32),
        ("deterministic", ctypes.c_int32),
    ]


def _candidate_paths():
    explicit = os.environ.get("FATTN_LIBRARY")
    if explicit:
        return [explicit]
    package_dir = os.path.dirname(os.path.abspath(__file__))
    shipped = sorted(glob.glob(os.path.join(package_dir, "libfattn.so*")))
    shipped += sorted(glob.glob(os.path.join(package_dir, "libfattn*.dylib")))
    system = ctypes.util.find_library("fattn")
    return shipped + ([system] if system else []) + ["libfattn.so.0"]


def _load():
    failures = []
    for path in _candidate_paths():
        try:
            return ctypes.CDLL(path), path
        except OSError as error:
            failures.append(f"  {path}: {error}")
    raise ImportError(
        "fattn: cannot load libfattn. Install it (cmake --install <build>), reinstall this package "
        "from the source tree (pip install bindings/python builds it), or set FATTN_LIBRARY to the "
        "path of libfattn.so.0. Tried:\n" + "\n".join(failures))


def check_version(library_version_number, package_version=__version__):
    """The package speaks the ABI of its major version only; raises ImportError on a mismatch."""
    library_major = library_version_number // 10000
    package_major = int(package_version.split(".")[0])
    if library_major != package_major:
        raise ImportError(
            f"fattn: the Python package {package_version} needs libfattn {package_major}.x, but the "
            f"loaded library is version {library_major}.{library_version_number // 100 % 100}."
            f"{library_version_number % 100} ({path})")


def _declare(lib):
    status = ctypes.c_int
    handle = ctypes.c_void_p
    tensor = ctypes.POINTER(Tensor)
    desc = ctypes.POINTER(AttentionDesc)
    prototypes = {
        "fattn_version_number": (ctypes.c_uint32, []),
        "fattn_version_string": (ctypes.c_char_p, []),
        "fattn_status_string": (ctypes.c_char_p, [status]),
        "fattn_last_error": (ctypes.c_char_p, []),
        "fattn_backend_available": (ctypes.c_int, [ctypes.c_int]),
        "fattn_create": (status, [ctypes.POINTER(handle), ctypes.c_int]),
        "fattn_destroy": (status, [handle]),
        "fattn_get_backend": (status, [handle, ctypes.POINTER(ctypes.c_int)]),
        "fattn_set_stream": (status, [handle, ctypes.c_void_p]),
        "fattn_forward": (status, [handle, desc, tensor, tensor, tensor, tensor, tensor]),
        "fattn_backward": (status, [handle, desc] + [tensor] * 9),
    }
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


lib, path = _load()
_declare(lib)
check_version(lib.fattn_version_number())


def check(status):
    """Raises the FattnError subclass for a failed call, with this thread's fattn_last_error()."""
    if status != errors.SUCCESS:
        raise errors.error_for_status(status, lib.fattn_last_error().decode("utf-8", "replace"))


class _Handle:
    """One fattn_handle_t, destroyed with the object. Handles are single-thread, hence the
    thread-local cache below."""

    def __init__(self, backend):
        self.value = ctypes.c_void_p()
        check(lib.fattn_create(ctypes.byref(self.value), backend))
        self._destroy = lib.fattn_destroy  # kept so destruction works during interpreter exit

    def __del__(self):
        if self.value:
            self._destroy(self.value)


_thread_state = threading.local()


def handle(backend, device_index=None):
    """This thread's handle for (backend, device); CUDA handles must be first asked for while
    that device is current."""
    cache = _thread_state.__dict__.setdefault("handles", {})
    key = (backend, device_index)
    if key not in cache:
        cache[key] = _Handle(backend)
    return cache[key].value


def backend_available(backend):
    return bool(lib.fattn_backend_available(backend))
