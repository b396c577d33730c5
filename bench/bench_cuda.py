#!/usr/bin/env python3
"""GPU benchmark and check harness for fattn's CUDA backend, beside PyTorch SDPA in the same run.

Loads libfattn through ctypes (no bindings needed), wraps torch CUDA tensors as fattn_tensor_t
(data pointer and strides, no copies), runs on torch's current stream, and:

  bench (default)  times fattn forward and backward and, in the same process on the same card,
                   torch SDPA with the FLASH_ATTENTION (FlashAttention-2) and CUDNN_ATTENTION
                   backends: median of per-call CUDA-event timings after warm-up, over
                   --rounds rounds that take turns in a rotated order (interleaved_ms), TFLOP/s
                   (forward 4*B*H*N*N*D, halved when causal; backward 2.5x that) and the ratio of
                   fattn to each peer. Grid of issue 3: D in {64, 128}, N in {1024, 4096, 16384},
                   B*N = 16384 tokens, H*D = 2048, causal and not, f16 and bf16. Every row is
                   first checked against a float32 reference (on sampled heads and rows); a wrong
                   result stops the run. Layout [B, N, H, D] (FlashAttention's), for all three.
  --verify         a feature sweep of the forward (and backward when the library has one) against
                   a float64 reference: every head-dim tile and dtype, odd lengths, Nq != Nk,
                   causal and sliding windows, rows with no visible key, GQA/MQA, both layouts,
                   misaligned views, LSE; outputs are poisoned first. fattn's error must be within
                   2x the error of PyTorch's math backend at the same dtype (plus 1e-4).

Writes JSON and a markdown table under --out (default: $OUT, else bench/results).

  python3 bench/bench_cuda.py --lib build/src/libfattn.so.0 [--quick] [--shape D,N] [--forward-only]
  python3 bench/bench_cuda.py --lib build/src/libfattn.so.0 --verify
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# ---- the C ABI (include/fattn.h) ---------------------------------------------------------------
FATTN_SUCCESS = 0
FATTN_BACKEND_CUDA = 2
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("reserved", ctypes.c_int32),
                ("shape", ctypes.c_int64 * 4), ("strides", ctypes.c_int64 * 4)]


class AttentionDesc(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("causal", ctypes.c_int32), ("softmax_scale", ctypes.c_float),
                ("window_left", ctypes.c_int32), ("window_right", ctypes.c_int32),
                ("deterministic", ctypes.c_int32)]


class FattnError(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"status {status}: {message}")
        self.status = status


class Fattn:
    """A CUDA handle of libfattn bound to torch's current stream."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.fattn_last_error.restype = ctypes.c_char_p
        self.lib.fattn_version_string.restype = ctypes.c_char_p
        self.handle = ctypes.c_void_p()
        self._check(self.lib.fattn_create(ctypes.byref(self.handle), FATTN_BACKEND_CUDA))
        self._check(self.lib.fattn_set_stream(self.handle, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)))
        self.version = self.lib.fattn_version_string().decode()

    def _check(self, status):
        if status != FATTN_SUCCESS:
            raise FattnError(status, self.lib.fattn_last_error().decode())

    @staticmethod
    def tensor(t, layout):
        """fattn_tensor_t over a torch tensor holding logical [B, H, N, D] in `layout`."""
        if t is None:
            return None
        bhnd = t.permute(0, 2, 1, 3) if layout == "bnhd" else t
        view = Tensor()
        view.data = t.data_ptr()
        view.dtype = DTYPES[t.dtype]
        view.reserved = 0
        view.shape[:] = list(bhnd.shape)
        view.strides[:] = list(bhnd.stride())
        return view

    @staticmethod
    def desc(causal, window, scale):
        d = AttentionDesc()
        d.struct_size = ctypes.sizeof(AttentionDesc)
        d.causal = int(causal)
        d.softmax_scale = scale
        d.window_left, d.window_right = window
        d.deterministic = 0
        return d

    @staticmethod
    def _ref(view):
        return ctypes.byref(view) if view is not None else None

    def forward(self, q, k, v, o, lse, layout, causal=False, window=(-1, -1), scale=0.0):
        views = [self.tensor(t, layout) for t in (q, k, v, o)] + [self.tensor(lse, "bhnd")]
        d = self.desc(causal, window, scale)
        self._check(self.lib.fattn_forward(self.handle, ctypes.byref(d), *[self._ref(x) for x in views]))

    def backward(self, q, k, v, o, do, lse, dq, dk, dv, layout, causal=False, window=(-1, -1), scale=0.0):
        views = [self.tensor(t, layout) for t in (q, k, v, o, do)] + [self.tensor(lse, "bhnd")] + \
                [self.tensor(t, layout) for t in (dq, dk, dv)]
        d = self.desc(causal, window, scale)
        self._check(self.lib.fattn_backward(self.handle, ctypes.byref(d), *[self._ref(x) for x in views]))


# ---- references --------------------------------------------------------------------------------
def visible_mask(nq, nk, causal, window, device):
    """Boolean [nq, nk]: FlashAttention 2.1+ bottom-right semantics (include/fattn.h)."""
    left, right = window
    if causal:
        right = 0
    rows = torch.arange(nq, device=device)[:, None]
    keys = torch.arange(nk, device=device)[None, :]
    diag = rows + (nk - nq)
    visible = torch.ones(nq, nk, dtype=torch.bool, device=device)
    if left >= 0:
        visible &= keys >= diag - left
    if right >= 0:
        visible &= keys <= diag + right
    return visible


def reference(q, k, v, causal, window, scale, dtype, rows=None):
    """Attention in `dtype` arithmetic on [B, H, N, D] inputs, GQA by head repetition.
    Returns (out, lse); rows with no visible key give zeros and lse -inf. `rows` restricts the
    query rows computed (their positions are kept for the mask)."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1).to(dtype)
    v = v.repeat_interleave(group, dim=1).to(dtype)
    q = q.to(dtype)
    visible = visible_mask(q.shape[2], k.shape[2], causal, window, q.device)
    if rows is not None:
        q, visible = q[:, :, rows], visible[rows]
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    return torch.matmul(probs, v), lse


def math_backend(q, k, v, causal, window, scale):
    """PyTorch's math backend at the storage dtype: the accuracy yardstick of the tests."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    visible = visible_mask(q.shape[2], k.shape[2], causal, window, q.device)
    with sdpa_kernel(SDPBackend.MATH):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale)
    return torch.where(visible.any(-1)[:, None], out, torch.zeros_like(out))  # math gives NaN there


def relative_error(out, ref):
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# ---- verify: the feature sweep -------------------------------------------------------------------
VERIFY_CASES = [
    # (head_dim, batch, heads_q, heads_kv, seqlen_q, seqlen_k, causal, window)
    (8, 2, 3, 3, 129, 129, False, (-1, -1)),
    (32, 1, 2, 2, 1, 7, False, (-1, -1)),
    (40, 2, 4, 2, 1000, 1000, True, (-1, -1)),
    (64, 1, 4, 1, 257, 513, True, (-1, -1)),
    (64, 2, 2, 2, 300, 77, True, (-1, -1)),       # Nq > Nk: first rows see no key
    (72, 1, 3, 3, 129, 200, False, (32, 8)),
    (96, 1, 2, 2, 513, 513, False, (64, 0)),
    (128, 2, 4, 4, 1000, 1000, False, (-1, -1)),
    (128, 1, 8, 2, 777, 1111, True, (-1, -1)),
    (136, 1, 2, 2, 200, 200, False, (0, 0)),
    (192, 1, 2, 2, 333, 129, False, (-1, 16)),
    (200, 1, 2, 1, 130, 130, True, (-1, -1)),
    (256, 2, 2, 2, 257, 255, False, (-1, -1)),
    (256, 1, 2, 2, 64, 300, True, (10, -1)),
]


def make_inputs(shape, layout, dtype, misalign=False, generator=None):
    """A random [B, H, N, D] tensor stored as `layout`; `misalign` offsets the data by one element
    and the row stride by one, so 16-byte vector paths cannot be used."""
    b, h, n, d = shape
    stored = (b, n, h, d) if layout == "bnhd" else (b, h, n, d)
    if misalign:
        padded = list(stored)
        padded[-1] += 1
        base = torch.randn(math.prod(padded) + 1, device="cuda", generator=generator).to(dtype)
        t = base[1:].view(padded)[..., :d]
    else:
        t = torch.randn(stored, device="cuda", generator=generator).to(dtype)
    return t


def as_bhnd(t, layout):
    return t.permute(0, 2, 1, 3) if layout == "bnhd" else t


def verify(lib, dtypes):
    generator = torch.Generator(device="cuda")
    generator.seed()  # fresh inputs every run
    failures = 0
    has_backward = None
    print(f"{'D':>4} {'B':>2} {'Hq':>3} {'Hkv':>3} {'Nq':>5} {'Nk':>5} {'mask':>12} {'dtype':>8} {'layout':>6} "
          f"{'mis':>3} {'err':>9} {'math':>9} {'lse':>9} result")
    for (d, b, hq, hkv, nq, nk, causal, window) in VERIFY_CASES:
        for dtype in dtypes:
            for layout, misalign in (("bhnd", False), ("bnhd", False), ("bnhd", True)):
                q = make_inputs((b, hq, nq, d), layout, dtype, misalign, generator)
                k = make_inputs((b, hkv, nk, d), layout, dtype, misalign, generator)
                v = make_inputs((b, hkv, nk, d), layout, dtype, misalign, generator)
                o = make_inputs((b, hq, nq, d), layout, dtype, misalign, generator).fill_(float("nan"))
                lse = torch.full((b, hq, nq), float("nan"), device="cuda")
                scale = 1.0 / math.sqrt(d)
                lib.forward(q, k, v, o, lse.unsqueeze(-1), layout, causal, window, scale)
                torch.cuda.synchronize()
                qb, kb, vb, ob = (as_bhnd(t, layout) for t in (q, k, v, o))
                ref, ref_lse = reference(qb, kb, vb, causal, window, scale, torch.float64)
                err = relative_error(ob, ref)
                math_err = relative_error(math_backend(qb, kb, vb, causal, window, scale), ref)
                finite = torch.isfinite(ref_lse)
                lse_ok = bool(torch.equal(torch.isneginf(lse), ~finite))  # -inf exactly where no key is visible
                lse_err = ((lse[finite].double() - ref_lse[finite]).abs().max().item() if finite.any() else 0.0)
                ok = (not torch.isnan(ob).any().item()) and err <= 2 * math_err + 1e-4 and lse_ok and lse_err < 1e-3
                failures += not ok
                mask = "causal" if causal else ("none" if window == (-1, -1) else f"w{window[0]},{window[1]}")
                print(f"{d:>4} {b:>2} {hq:>3} {hkv:>3} {nq:>5} {nk:>5} {mask:>12} {str(dtype)[6:]:>8} {layout:>6} "
                      f"{'y' if misalign else 'n':>3} {err:9.2e} {math_err:9.2e} {lse_err:9.2e} "
                      f"{'ok' if ok else 'FAIL'}", flush=True)
    print(f"verify: {failures} failure(s)")
    return failures


# ---- bench ---------------------------------------------------------------------------------------
def time_ms(fn, args):
    """Median of args.iters per-call CUDA-event timings after warm-up: at least args.warmup calls,
    and at least args.warmup_seconds of them, so that the card's clock and power state is mostly
    the one this call sustains rather than what ran before it (a pause, a heavier kernel)."""
    start = time.perf_counter()
    calls = 0
    while calls < args.warmup or time.perf_counter() - start < args.warmup_seconds:
        fn()
        calls += 1
        if calls % 8 == 0:
            torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(args.iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(args.iters)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def interleaved_ms(calls, args):
    """time_ms of every callable in `calls` (name -> callable), args.rounds times, the order
    rotated each round so that each takes every position alike; the median per name. Timed once
    each in a fixed order, the short rows' ratios moved by 10-15% with what ran just before
    (bench/NOTES.md, fifteenth session)."""
    names = list(calls)
    samples = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(time_ms(calls[name], args))
    return {name: statistics.median(values) for name, values in samples.items()}


def sdpa(backend, q, k, v, causal):
    """torch SDPA on [B, N, H, D] storage through [B, H, N, D] views (no copies)."""
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              is_causal=causal)


def sdpa_backward_step(backend, q, k, v, do, causal):
    """A callable that runs torch SDPA's backward on `backend` once (the forward's graph is built
    here, once), on [B, N, H, D] storage as sdpa() takes it."""
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    out = sdpa(backend, qg, kg, vg, causal)

    def step():
        with sdpa_kernel(backend):
            torch.autograd.grad(out, (qg, kg, vg), do.transpose(1, 2), retain_graph=True)
    return step


def check_row(lib, q, k, v, o, causal, scale, flash_out):
    """fattn's and FlashAttention-2's outputs against float32 on sampled heads and rows."""
    b, n, h, d = q.shape
    heads = [0, h - 1]
    rows = torch.unique(torch.cat([torch.arange(min(n, 256), device="cuda"),
                                   torch.randint(0, n, (256,), device="cuda"),
                                   torch.arange(max(0, n - 256), n, device="cuda")]))
    sub = lambda t: t[:1, :, heads].transpose(1, 2)  # [1, 2, N, D]
    ref, _ = reference(sub(q), sub(k), sub(v), causal, (-1, -1), scale, torch.float32, rows)
    err = relative_error(sub(o)[:, :, rows], ref)
    flash_err = relative_error(flash_out[:1, heads][:, :, rows], ref)
    if not (err <= 2 * flash_err + 1e-4) or not torch.isfinite(o).all():
        raise SystemExit(f"WRONG RESULT: fattn relative error {err:.3e} vs FlashAttention-2 {flash_err:.3e}")
    return err, flash_err


def bench(lib, args):
    rows = []
    tokens, hidden = 16384, 2048
    shapes = [(d, n) for d in (64, 128) for n in (1024, 4096, 16384)]
    if args.quick:
        shapes = [(64, 16384), (128, 16384), (128, 1024)]
    if args.shape:
        shapes = [tuple(int(x) for x in s.split(",")) for s in args.shape]
    dtypes = [torch.bfloat16] if args.quick else [torch.float16, torch.bfloat16]
    backward_note = None
    header = (f"{'dtype':>8} {'D':>4} {'N':>6} {'B':>3} {'H':>3} {'causal':>6} | {'fwd':>6} {'FA2':>6} {'cuDNN':>6} "
              f"{'/FA2':>5} {'/cuDNN':>6} | {'bwd':>6} {'FA2':>6} {'cuDNN':>6} {'/FA2':>5} {'/cuDNN':>6} | err")
    print(header, flush=True)
    for dtype in dtypes:
        for d, n in shapes:
            for causal in (False, True):
                b, h = tokens // n, hidden // d
                scale = 1.0 / math.sqrt(d)
                q, k, v, do = (torch.randn(b, n, h, d, device="cuda", dtype=dtype) for _ in range(4))
                o = torch.full_like(q, float("nan"))
                lse = torch.empty(b, h, n, 1, device="cuda", dtype=torch.float32)
                flops = 4 * b * h * n * n * d / (2 if causal else 1)
                fattn_fwd = lambda: lib.forward(q, k, v, o, lse, "bnhd", causal, (-1, -1), scale)
                fattn_fwd()
                flash_out = sdpa(SDPBackend.FLASH_ATTENTION, q, k, v, causal)
                err, flash_err = check_row(lib, q, k, v, o, causal, scale, flash_out)
                row = dict(dtype=str(dtype)[6:], head_dim=d, seqlen=n, batch=b, heads=h, causal=causal,
                           rel_err=err, flash_rel_err=flash_err)
                t = interleaved_ms(dict(fattn=fattn_fwd,
                                        flash=lambda: sdpa(SDPBackend.FLASH_ATTENTION, q, k, v, causal),
                                        cudnn=lambda: sdpa(SDPBackend.CUDNN_ATTENTION, q, k, v, causal)), args)
                row["fwd_tflops"] = {key: flops / ms / 1e9 for key, ms in t.items()}
                if args.forward_only:
                    row["bwd_tflops"], backward_note = {}, "--forward-only"
                else:
                    row["bwd_tflops"], note = bench_backward(lib, q, k, v, o, do, lse, causal, scale, flops * 2.5, args)
                    backward_note = backward_note or note
                rows.append(row)
                print(format_row(row), flush=True)
                del q, k, v, do, o, lse, flash_out
                torch.cuda.empty_cache()
    if backward_note:
        print(f"fattn backward not timed: {backward_note}")
    return rows, backward_note


def bench_backward(lib, q, k, v, o, do, lse, causal, scale, flops, args):
    """Backward TFLOP/s of fattn (when the library has a CUDA backward) and of the two SDPA
    backends, plus the reason fattn's was not timed (None when it was)."""
    calls, note = {}, None
    dq, dk, dv = (torch.empty_like(t) for t in (q, k, v))
    fattn_bwd = lambda: lib.backward(q, k, v, o, do, lse, dq, dk, dv, "bnhd", causal, (-1, -1), scale)
    try:
        fattn_bwd()
        calls["fattn"] = fattn_bwd
    except FattnError as error:
        note = str(error)
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        calls[name] = sdpa_backward_step(backend, q, k, v, do, causal)
    return {name: flops / ms / 1e9 for name, ms in interleaved_ms(calls, args).items()}, note


def format_row(row):
    f, bw = row["fwd_tflops"], row["bwd_tflops"]
    ratio = lambda x, y: f"{x / y:5.2f}" if x and y else "    -"
    num = lambda x: f"{x:6.1f}" if x else "     -"
    return (f"{row['dtype']:>8} {row['head_dim']:>4} {row['seqlen']:>6} {row['batch']:>3} {row['heads']:>3} "
            f"{str(row['causal']):>6} | {num(f['fattn'])} {num(f['flash'])} {num(f['cudnn'])} "
            f"{ratio(f['fattn'], f['flash'])} {ratio(f['fattn'], f['cudnn']):>6} | {num(bw.get('fattn'))} "
            f"{num(bw.get('flash'))} {num(bw.get('cudnn'))} {ratio(bw.get('fattn'), bw.get('flash'))} "
            f"{ratio(bw.get('fattn'), bw.get('cudnn')):>6} | {row['rel_err']:.1e}")


def write_results(rows, backward_note, args, device_name, version):
    out_dir = args.out or os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    card = device_name.replace(" ", "-")
    base = os.path.join(out_dir, f"cuda-{card}-{stamp:%Y%m%d-%H%M}")
    meta = dict(card=device_name, date=stamp.isoformat(timespec="seconds"), fattn_version=version,
                torch=torch.__version__, cudnn=torch.backends.cudnn.version(), layout="[B, N, H, D]",
                timing=f"median over {args.rounds} interleaved rounds of the median of {args.iters} "
                       f"CUDA-event timings after warm-up (at least {args.warmup} calls and "
                       f"{args.warmup_seconds} s)",
                flops="fwd 4*B*H*N*N*D (halved when causal), bwd 2.5x fwd", backward_note=backward_note)
    with open(base + ".json", "w") as f:
        json.dump(dict(meta, rows=rows), f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(f"# fattn CUDA vs PyTorch SDPA: {device_name}, {stamp:%Y-%m-%d %H:%M} UTC\n\n")
        f.write(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, layout [B, N, H, D], "
                f"B*N = 16384, H*D = 2048; TFLOP/s, {meta['timing']}.\n")
        if backward_note:
            f.write(f"\nfattn backward not timed: {backward_note}\n")
        f.write("\n| dtype | D | N | B | H | causal | fwd fattn | fwd FA2 | fwd cuDNN | /FA2 | /cuDNN "
                "| bwd fattn | bwd FA2 | bwd cuDNN | /FA2 | /cuDNN | rel err |\n")
        f.write("|" + "---|" * 17 + "\n")
        for r in rows:
            fw, bw = r["fwd_tflops"], r["bwd_tflops"]
            cell = lambda x: f"{x:.1f}" if x else "-"
            ratio = lambda x, y: f"{x / y:.2f}" if x and y else "-"
            f.write(f"| {r['dtype']} | {r['head_dim']} | {r['seqlen']} | {r['batch']} | {r['heads']} | "
                    f"{r['causal']} | {cell(fw['fattn'])} | {cell(fw['flash'])} | {cell(fw['cudnn'])} | "
                    f"{ratio(fw['fattn'], fw['flash'])} | {ratio(fw['fattn'], fw['cudnn'])} | "
                    f"{cell(bw.get('fattn'))} | {cell(bw.get('flash'))} | {cell(bw.get('cudnn'))} | "
                    f"{ratio(bw.get('fattn'), bw.get('flash'))} | {ratio(bw.get('fattn'), bw.get('cudnn'))} | "
                    f"{r['rel_err']:.1e} |\n")
    print(f"wrote {base}.json and {base}.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", default=os.environ.get("FATTN_LIBRARY"), help="path of libfattn.so (or FATTN_LIBRARY)")
    parser.add_argument("--quick", action="store_true", help="bf16 only, three shapes")
    parser.add_argument("--shape", action="append", help="D,N (repeatable); overrides the grid")
    parser.add_argument("--verify", action="store_true", help="run the feature sweep instead of the benchmark")
    parser.add_argument("--forward-only", action="store_true", help="time the forward only")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--warmup-seconds", type=float, default=0.1, help="and at least this long (time_ms)")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per row (interleaved_ms)")
    parser.add_argument("--out", help="output folder (default $OUT, else bench/results)")
    args = parser.parse_args()
    if not args.lib:
        parser.error("give --lib or set FATTN_LIBRARY")
    lib = Fattn(args.lib)
    device_name = torch.cuda.get_device_name()
    print(f"fattn {lib.version} on {device_name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    if args.verify:
        sys.exit(1 if verify(lib, [torch.float16, torch.bfloat16]) else 0)
    rows, backward_note = bench(lib, args)
    write_results(rows, backward_note, args, device_name, lib.version)


if __name__ == "__main__":
    main()
