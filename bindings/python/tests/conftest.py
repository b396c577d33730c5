"""Shared fixtures: fresh random inputs on every run, reproducible from the seed in the header
(FATTN_TEST_SEED=<seed> python3 -m pytest ... replays a failure)."""
import os
import random
import zlib

import numpy as np
import pytest

SESSION_SEED = int(os.environ.get("FATTN_TEST_SEED", random.SystemRandom().randrange(2 ** 32)))

try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None


def pytest_report_header(config):
    return f"fattn test seed: {SESSION_SEED} (set FATTN_TEST_SEED to replay)"


@pytest.fixture
def rng(request):
    """A generator seeded by the session seed and the test's id, so tests stay independent."""
    return np.random.default_rng([SESSION_SEED, zlib.crc32(request.node.nodeid.encode())])


def storage_dtype(name):
    """The NumPy dtype for a storage name; skips bfloat16 when ml_dtypes is missing."""
    if name == "bfloat16":
        if ml_dtypes is None:
            pytest.skip("bfloat16 NumPy arrays need the ml_dtypes package")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
