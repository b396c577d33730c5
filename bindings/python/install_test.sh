#!/usr/bin/env bash
# CTest "python_package": what a user does. pip-installs bindings/python into a fresh virtual
# environment (shipping the library built here inside the package), then, from outside the source
# tree and without FATTN_LIBRARY or PYTHONPATH, runs the original project's usage: the PyTorch
# snippet with gradients when torch is installed, the NumPy equivalent always.
# Usage: install_test.sh <python3> <scratch dir> <path of libfattn.so.0>
set -euo pipefail
python=$1 scratch=$2 library=$3
package_dir=$(cd "$(dirname "$0")" && pwd)

rm -rf "$scratch"
"$python" -m venv --system-site-packages "$scratch/venv"  # numpy (and torch) from the system
# Build offline with the system's setuptools and wheel when it has them; pip fetches them otherwise.
isolation=()
if "$scratch/venv/bin/python" -c "import setuptools, wheel" 2>/dev/null; then
    isolation=(--no-build-isolation)
fi
FATTN_LIBRARY="$library" "$scratch/venv/bin/python" -m pip install -q --no-deps "${isolation[@]}" "$package_dir"

cd "$scratch"
env -u FATTN_LIBRARY -u PYTHONPATH "$scratch/venv/bin/python" - <<'PYTHON'
import sys

import numpy as np

import fattn
from fattn import attention

assert fattn.library_path.startswith(sys.prefix), f"loaded {fattn.library_path}, not the packaged copy"
q, k, v = (np.random.default_rng(seed).standard_normal((1, 2, 64, 32)).astype(np.float16) for seed in range(3))
output = attention(q, k, v, causal=True)
assert output.shape == q.shape and output.dtype == np.float16 and np.isfinite(output).all()
print(f"fattn {fattn.__version__} from {fattn.library_path}: NumPy snippet ok")

try:
    import torch
except ImportError:
    print("torch is not installed: the PyTorch snippet is skipped")
    sys.exit(0)
batch, heads, seq_len, head_dim = 1, 2, 64, 32
q = torch.randn(batch, heads, seq_len, head_dim, dtype=torch.float16, requires_grad=True)
k = torch.randn(batch, heads, seq_len, head_dim, dtype=torch.float16, requires_grad=True)
v = torch.randn(batch, heads, seq_len, head_dim, dtype=torch.float16, requires_grad=True)
output = attention(q, k, v, causal=True)
output.sum().backward()
assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in (q, k, v))
print("PyTorch snippet with gradients ok")
PYTHON
