#!/usr/bin/env python3
"""Interleaved A/B timing of several libfattn builds in one process, beside cuDNN.

Kernel changes of a few percent sit inside the card's drift between runs (clocks, temperature),
so builds are compared round by round on the same inputs: each round times every build (and
PyTorch SDPA's CUDNN_ATTENTION backend, the anchor of the same run) once, as the median of
--iters CUDA-event timings after warm-up; the table gives each build's median over --rounds
rounds, its ratio to the first build and to cuDNN. Before timing, every build's output is checked
against the first build's (a diagnostic build that skips work is reported as such, not timed as
correct: --allow-wrong times it anyway).

  python3 bench/ab_cuda.py --lib base=old/libfattn.so.0 --lib new=build/src/libfattn.so.0 \
      --shape 128,1024,causal --shape 64,16384 [--backward] [--dtype bf16] [--rounds 7]

Shapes are D,N[,causal] with B*N = 16384 tokens and H*D = 2048 (the grid of bench_cuda.py).
Results are appended to $OUT/ab-fwd.json or $OUT/ab-bwd.json when OUT is set.
"""
import argparse
import json
import math
import os
import statistics

import torch
from torch.nn.attention import SDPBackend

import bench_cuda as bc


def parse_shape(text):
    parts = text.split(",")
    return int(parts[0]), int(parts[1]), len(parts) > 2 and parts[2] == "causal"


def grid_inputs(d, n, causal, dtype, backward):
    """One row of bench_cuda.py's grid (B*N = 16384 tokens, H*D = 2048): fresh q, k, v and dO,
    O and lse buffers, the softmax scale, and the FLOPs of one call."""
    b, h = 16384 // n, 2048 // d
    q, k, v, do = (torch.randn(b, n, h, d, device="cuda", dtype=dtype) for _ in range(4))
    lse = torch.empty(b, h, n, 1, device="cuda", dtype=torch.float32)
    flops = 4 * b * h * n * n * d / (2 if causal else 1) * (2.5 if backward else 1)
    return q, k, v, do, torch.empty_like(q), lse, 1.0 / math.sqrt(d), flops


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", action="append", required=True, help="NAME=PATH of a libfattn build (repeatable)")
    parser.add_argument("--shape", action="append", required=True, help="D,N[,causal] (repeatable)")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "f16"))
    parser.add_argument("--backward", action="store_true", help="time the backward instead of the forward")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--warmup-seconds", type=float, default=0.1, help="and at least this long")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--allow-wrong", action="store_true", help="time builds whose output differs too")
    args = parser.parse_args()

    libs = [(name, bc.Fattn(path)) for name, path in (spec.split("=", 1) for spec in args.lib)]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    direction = "bwd" if args.backward else "fwd"
    results = []
    print(f"{'D':>4} {'N':>6} {'causal':>6} {direction} TFLOP/s, median of {args.rounds} interleaved rounds")
    for d, n, causal in (parse_shape(s) for s in args.shape):
        q, k, v, do, o, lse, scale, flops = grid_inputs(d, n, causal, dtype, args.backward)
        if args.backward:  # the first build's forward feeds every build's backward
            libs[0][1].forward(q, k, v, o, lse, "bnhd", causal, (-1, -1), scale)
        calls, outputs = {}, {}
        for name, lib in libs:
            if args.backward:
                mine = [torch.full_like(t, float("nan")) for t in (q, k, v)]
                calls[name] = (lambda lib=lib, mine=mine: lib.backward(q, k, v, o, do, lse, *mine, "bnhd", causal,
                                                                        (-1, -1), scale))
                outputs[name] = mine
            else:
                mine = [torch.full_like(q, float("nan")), torch.full_like(lse, float("nan"))]
                calls[name] = (lambda lib=lib, mine=mine: lib.forward(q, k, v, *mine, "bnhd", causal, (-1, -1),
                                                                       scale))
                outputs[name] = mine
            calls[name]()
        torch.cuda.synchronize()
        first = libs[0][0]
        wrong = {}
        for name in calls:
            worst = max(bc.relative_error(x, y) for x, y in zip(outputs[name], outputs[first]))
            if not all(torch.isfinite(x).all() for x in outputs[name]) or worst > 2e-2:
                wrong[name] = worst
        if args.backward:
            calls["cuDNN"] = bc.sdpa_backward_step(SDPBackend.CUDNN_ATTENTION, q, k, v, do, causal)
        else:
            calls["cuDNN"] = lambda: bc.sdpa(SDPBackend.CUDNN_ATTENTION, q, k, v, causal)
        timed = [name for name in calls if args.allow_wrong or name not in wrong]
        samples = {name: [] for name in timed}
        for _ in range(args.rounds):
            for name in timed:
                samples[name].append(flops / bc.time_ms(calls[name], args) / 1e9)
        medians = {name: statistics.median(values) for name, values in samples.items()}
        base = medians.get(first)
        for name in calls:
            if name not in medians:
                print(f"{d:>4} {n:>6} {str(causal):>6}  {name:>12}  output differs from {first} "
                      f"(relative {wrong[name]:.2e}): not timed")
                continue
            spread = max(samples[name]) - min(samples[name])
            note = f"  differs from {first} ({wrong[name]:.1e})" if name in wrong else ""
            print(f"{d:>4} {n:>6} {str(causal):>6}  {name:>12} {medians[name]:7.1f}  +-{spread / 2:5.1f}"
                  f"  /{first} {medians[name] / base if base else float('nan'):5.3f}"
                  f"  /cuDNN {medians[name] / medians['cuDNN']:5.3f}{note}")
        results.append(dict(head_dim=d, seqlen=n, causal=causal, dtype=args.dtype, direction=direction,
                            tflops=samples, wrong=wrong))
        del q, k, v, do, o, lse, outputs, calls
        torch.cuda.empty_cache()
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], f"ab-{direction}.json"), "a") as f:
            json.dump(dict(card=torch.cuda.get_device_name(), rounds=args.rounds, iters=args.iters,
                           libs=dict(spec.split("=", 1) for spec in args.lib), results=results), f)
            f.write("\n")


if __name__ == "__main__":
    main()
