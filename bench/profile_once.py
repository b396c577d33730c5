#!/usr/bin/env python3
"""One grid row's forward (or backward) called twice, for a profiler that skips the first call.

Under ncu (`--launch-skip 1 --launch-count 1 -k regex:forward_kernel`) the second call is the one
profiled: its caches and clocks are those of a repeated call, not of the process's first launch.
Shapes are D,N[,causal] as in ab_cuda.py (B*N = 16384 tokens, H*D = 2048); bench/ncu_compare.py
reads two such profiles.

  python3 bench/profile_once.py --lib build/src/libfattn.so.0 --shape 64,1024,causal [--backward]
"""
import argparse

import torch

import ab_cuda
import bench_cuda as bc


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", required=True, help="path of the libfattn build")
    parser.add_argument("--shape", required=True, help="D,N[,causal]")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "f16"))
    parser.add_argument("--backward", action="store_true")
    args = parser.parse_args()
    lib = bc.Fattn(args.lib)
    d, n, causal = ab_cuda.parse_shape(args.shape)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    q, k, v, do, o, lse, scale, _ = ab_cuda.grid_inputs(d, n, causal, dtype, args.backward)
    lib.forward(q, k, v, o, lse, "bnhd", causal, (-1, -1), scale)
    if args.backward:
        gradients = [torch.empty_like(t) for t in (q, k, v)]
        for _ in range(2):
            lib.backward(q, k, v, o, do, lse, *gradients, "bnhd", causal, (-1, -1), scale)
    else:
        lib.forward(q, k, v, o, lse, "bnhd", causal, (-1, -1), scale)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
