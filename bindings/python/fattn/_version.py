"""The Python package's version: the libfattn release it was written against (one source of truth
for pyproject.toml and the load-time check against the library's major version)."""
__version__ = "0.1.0"
