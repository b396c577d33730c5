"""The float64 reference of the Python tests and the accuracy rule's yardstick, written from the
ABI text like tests/reference.h: scores s = scale * q k^T over visible keys, lse = log sum exp s,
P = exp(s - lse), out = P v; backward dP = dout v^T, D = rowsum(dout * out), dS = P (dP - D),
dq = scale dS k, dk = scale dS^T q, dv = P^T dout, dk/dv summed over each key/value head's group.

The yardstick ("naive") is the same math in float32 with its outputs rounded to the storage dtype,
its backward reading the stored (rounded) out like any backward given the forward's output; fattn
must stay within 2x its error against float64 (plus a tiny absolute slack near zero)."""
import numpy as np

STORAGE_EPSILON = {"float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def visible_keys(seqlen_q, seqlen_k, causal, window):
    """Boolean [Nq, Nk]: row i sees key j (bottom-right aligned, FlashAttention 2.1+)."""
    window_left, window_right = window
    if causal:
        window_right = 0
    rows = np.arange(seqlen_q)[:, None] + (seqlen_k - seqlen_q)
    keys = np.arange(seqlen_k)[None, :]
    mask = np.ones((seqlen_q, seqlen_k), dtype=bool)
    if window_left >= 0:
        mask &= keys >= rows - window_left
    if window_right >= 0:
        mask &= keys <= rows + window_right
    return mask


def attention(q, k, v, dout, causal=False, scale=None, window=(-1, -1), storage=None):
    """dict of out, lse ([B, Hq, Nq]), dq, dk, dv: in float64 without `storage`, else the naive
    yardstick in float32 with out, dq, dk, dv stored as `storage` (lse stays float32, as in the ABI)."""
    real = np.float64 if storage is None else np.float32
    stored = (lambda x: x) if storage is None else (lambda x: round_to_storage(x, storage))
    q, k, v, dout = (np.asarray(x, dtype=np.float64).astype(real) for x in (q, k, v, dout))
    group = q.shape[1] // k.shape[1]
    scale = real(1.0 / np.sqrt(q.shape[3]) if scale is None else scale)
    k_per_q, v_per_q = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    mask = visible_keys(q.shape[2], k.shape[2], causal, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(mask, scale * (q @ k_per_q.swapaxes(-1, -2)), real(-np.inf))
        row_max = scores.max(axis=-1, keepdims=True)
        sees_nothing = np.isneginf(row_max)
        shifted = np.exp(scores - np.where(sees_nothing, real(0), row_max))
        lse = np.where(sees_nothing, real(-np.inf), row_max + np.log(shifted.sum(axis=-1, keepdims=True)))
        p = np.where(sees_nothing, real(0), np.exp(scores - np.where(sees_nothing, real(0), lse)))
    out = stored(p @ v_per_q)
    dp = dout @ v_per_q.swapaxes(-1, -2)
    ds = p * (dp - (dout * out).sum(axis=-1, keepdims=True))
    dq = scale * (ds @ k_per_q)
    dk_per_q = scale * (ds.swapaxes(-1, -2) @ q)
    dv_per_q = p.swapaxes(-1, -2) @ dout
    batch, heads_kv = k.shape[:2]

    def sum_over_group(x):
        return x.reshape(batch, heads_kv, group, *x.shape[2:]).sum(axis=2)

    return {"out": out, "lse": lse[..., 0], "dq": stored(dq), "dk": stored(sum_over_group(dk_per_q)),
            "dv": stored(sum_over_group(dv_per_q))}


def round_to_storage(x, storage):
    """float32 values rounded to float16 / bfloat16 (nearest even), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    if storage == "float16":
        return x.astype(np.float16).astype(np.float32)
    if storage == "bfloat16":
        bits = x.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return rounded.astype(np.uint32).view(np.float32)
    return x


def max_error(got, expected):
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    both_infinite = np.isinf(got) & np.isinf(expected) & (np.sign(got) == np.sign(expected))
    with np.errstate(invalid="ignore"):  # inf - inf where both_infinite, masked out
        return float(np.max(np.where(both_infinite, 0.0, np.abs(got - expected))))


def assert_accurate(name, got, reference, yardstick, storage):
    """The accuracy rule: error(got) <= 2 * error(naive) + a slack of a few float32 ulps of the
    largest reference value (it only matters where the naive error is near zero)."""
    finite = np.asarray(reference, dtype=np.float64)
    scale = float(np.max(np.abs(finite[np.isfinite(finite)]), initial=1.0))
    slack = 4 * STORAGE_EPSILON["float32"] * scale
    error, naive_error = max_error(got, reference), max_error(yardstick, reference)
    assert np.isfinite(error), f"{name}: non-finite values where the reference has none"
    assert error <= 2 * naive_error + slack, (
        f"{name} ({storage}): max error {error:.3g} exceeds 2 x naive {naive_error:.3g} + {slack:.3g}")
