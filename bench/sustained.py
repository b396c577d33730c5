#!/usr/bin/env python3
"""Sustained runs of several libfattn builds with the card's SM clock and board power.

A change that adds work the issue slots had room for can still slow a kernel if it draws more
power and the card lowers its clock to stay inside its limit. Each build's forward (or backward)
runs back to back for --seconds while nvidia-smi samples the SM clock and power; the table gives
TFLOP/s, the median clock and power over the run (its first quarter dropped as ramp-up), and
TFLOP/s per GHz, which a clock change does not move. Builds take turns for --rounds rounds.
PyTorch's SDPA is not a peer here: called back to back from Python its D=128 backward left the
card mostly idle (140 W where fattn's drew 700), so its clock and power would not be comparable;
the speed comparison with it stays with ab_cuda.py and bench_cuda.py.

  python3 bench/sustained.py --lib base=old/libfattn.so.0 --lib new=build/src/libfattn.so.0 \
      --shape 128,16384 [--backward] [--dtype bf16] [--seconds 3]
"""
import argparse
import statistics
import subprocess
import time

import torch

import ab_cuda
import bench_cuda as bc


def sample_while(fn, seconds):
    """Runs fn back to back for `seconds`; returns (calls per second, [(clock MHz, power W)])."""
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
                            "-lms", "50"], stdout=subprocess.PIPE, text=True)
    torch.cuda.synchronize()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for _ in range(32):  # enough queued work that the host's launches never starve the card
            fn()
        calls += 32
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    smi.terminate()
    samples = []
    for line in smi.communicate()[0].splitlines():
        try:
            clock, power = (float(x) for x in line.split(","))
            samples.append((clock, power))
        except ValueError:
            pass
    return calls / elapsed, samples[len(samples) // 4:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", action="append", required=True, help="NAME=PATH of a libfattn build (repeatable)")
    parser.add_argument("--shape", action="append", required=True, help="D,N[,causal] (repeatable)")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "f16"))
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    libs = [(name, bc.Fattn(path)) for name, path in (spec.split("=", 1) for spec in args.lib)]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    print(f"{'D':>4} {'N':>6} {'causal':>6}  {'build':>8}  TFLOP/s  clock MHz  power W  TFLOP/s per GHz")
    for d, n, causal in (ab_cuda.parse_shape(s) for s in args.shape):
        q, k, v, do, o, lse, scale, flops = ab_cuda.grid_inputs(d, n, causal, dtype, args.backward)
        libs[0][1].forward(q, k, v, o, lse, "bnhd", causal, (-1, -1), scale)
        calls = {}
        for name, lib in libs:
            if args.backward:
                grads = [torch.empty_like(t) for t in (q, k, v)]
                calls[name] = (lambda lib=lib, grads=grads: lib.backward(q, k, v, o, do, lse, *grads, "bnhd", causal,
                                                                          (-1, -1), scale))
            else:
                out = [torch.empty_like(q), torch.empty_like(lse)]
                calls[name] = lambda lib=lib, out=out: lib.forward(q, k, v, *out, "bnhd", causal, (-1, -1), scale)
        runs = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, fn in calls.items():
                runs[name].append(sample_while(fn, args.seconds))
        for name, results in runs.items():
            rate = statistics.median(r[0] for r in results) * flops / 1e12
            samples = [s for r in results for s in r[1]]
            clock = statistics.median(s[0] for s in samples) if samples else float("nan")
            power = statistics.median(s[1] for s in samples) if samples else float("nan")
            print(f"{d:>4} {n:>6} {str(causal):>6}  {name:>8}  {rate:7.1f}  {clock:9.0f}  {power:7.0f}  "
                  f"{rate / clock * 1000:8.1f}")
        del q, k, v, do, o, lse, calls
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
