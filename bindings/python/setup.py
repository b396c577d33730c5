"""Build hook: puts libfattn inside the package, so `pip install bindings/python` needs nothing
else at run time. The library is the file named by FATTN_LIBRARY when set (e.g. one built with the
project's own CMake), else it is built here from this source tree with CMake (extra options via
FATTN_CMAKE_ARGS, e.g. "-DFATTN_CUDA=OFF"). Built outside a source tree (from an sdist), the
package ships no library and uses the system's."""
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _build_library(build_dir):
    configure = ["cmake", "-S", str(SOURCE_ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 "-DFATTN_BUILD_TESTS=OFF", "-DFATTN_BUILD_BENCH=OFF", "-DFATTN_BUILD_EXAMPLES=OFF"]
    subprocess.check_call(configure + shlex.split(os.environ.get("FATTN_CMAKE_ARGS", "")))
    subprocess.check_call(["cmake", "--build", str(build_dir), "--target", "fattn",
                           "--parallel", str(os.cpu_count() or 1)])
    return next(build_dir.rglob("libfattn.so.0"))


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        library = os.environ.get("FATTN_LIBRARY")
        if not library and (SOURCE_ROOT / "include" / "fattn.h").exists():
            build_temp = Path(self.get_finalized_command("build").build_temp).resolve()
            library = _build_library(build_temp / "libfattn")
        if library:
            # copy2 follows the libfattn.so.0 symlink to the real file; the loader needs one name.
            shutil.copy2(library, Path(self.build_lib) / "fattn" / "libfattn.so.0")


class BinaryDistribution(Distribution):
    """The wheel carries a native library, so it is tagged for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildPyWithLibrary}, distclass=BinaryDistribution)
