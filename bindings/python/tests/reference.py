"""The float64 reference of the Python tests and the accuracy rule's yardstick, written from the
ABI text like tests/reference.h: scores s = scale * q k^T over visible keys, lse = log sum exp s,
P = exp(s - lse), out = P v; backward dP = dout v^T, D = rowsum(dout * out), dS = P (dP - D),
dq = scale dS k, dk = scale dS^T q, dv = P^T dout, dk/dv summed over each key/value head's group.

The yardstick ("naive") is the same math in float32 with its outputs rounded to the storage dtype,
and the matrices it hands to matrix products (P, and dS in the backward) held in the storage dtype,
as PyTorch's math backend and tensor-core kernels do (tests/reference.h keeps the same policy); its
backward reads the stored (rounded) out like any backward given the forward's output; fattn
must stay within 2x its error against float64, plus a slack of a few float32 ulps of the sum of
magnitudes of each element's terms: where terms cancel (a row with one key has dS = 0 exactly),
an exp2-based kernel's last-bit differences in P show up unscaled by the result."""
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
    """dict of out, lse ([B, Hq, Nq]), dq, dk, dv: in float64 without `storage` (plus "terms": each
    element's sum of term magnitudes), else the naive yardstick in float32 with out, dq, dk, dv
    stored as `storage` (lse stays float32, as in the ABI)."""
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
    p_operand = stored(p)
    out = stored(p_operand @ v_per_q)
    dp = dout @ v_per_q.swapaxes(-1, -2)
    ds = p * (dp - (dout * out).sum(axis=-1, keepdims=True))
    ds_operand = stored(ds)
    dq = scale * (ds_operand @ k_per_q)
    dk_per_q = scale * (ds_operand.swapaxes(-1, -2) @ q)
    dv_per_q = p_operand.swapaxes(-1, -2) @ dout
    batch, heads_kv = k.shape[:2]

    def sum_over_group(x):
        return x.reshape(batch, heads_kv, group, *x.shape[2:]).sum(axis=2)

    result = {"out": out, "lse": lse[..., 0], "dq": stored(dq), "dk": stored(sum_over_group(dk_per_q)),
                "dv": stored(sum_over_group(dv_per_q))}
    if storage is None:
        ds_terms = p * (np.abs(dout) @ np.abs(v_per_q).swapaxes(-1, -2)
                        + (np.abs(dout) * np.abs(out)).sum(axis=-1, keepdims=True))
        result["terms"] = {
            "out": p @ np.abs(v_per_q),
            "lse": np.where(sees_nothing, 0.0, np.abs(np.where(mask, scores, 0.0)).max(axis=-1, keepdims=True) + 1)[..., 0],
            "dq": scale * (ds_terms @ np.abs(k_per_q)),
            "dk": sum_over_group(scale * (ds_terms.swapaxes(-1, -2) @ np.abs(q))),
            "dv": sum_over_group(p.swapaxes(-1, -2) @ np.abs(dout)),
        }
    return result


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


def _errors(got, expected):
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    both_infinite = np.isinf(got) & np.isinf(expected) & (np.sign(got) == np.sign(expected))
    with np.errstate(invalid="ignore"):  # inf - inf where both_infinite, masked out
        return np.where(both_infinite, 0.0, np.abs(got - expected))


def assert_accurate(name, got, exact, naive, storage):
    """The accuracy rule for output `name`, the core suite's (tests/harness.h): within 2x the naive
    error, plus a floor for where the naive result happens to be nearly exact: one storage ulp at
    the output's largest magnitude (a tiny problem's naive maximum can fall below what any other
    rounding order gives: 1 in 150 seeds for 16 x 40, every kernel family alike) and four fp32
    roundings of each element's sum of term magnitudes. exact and naive are attention()'s results
    in float64 and as the storage-precision yardstick."""
    errors = _errors(got, exact[name])
    naive_error = float(np.max(_errors(naive[name], exact[name])))
    finite = np.abs(exact[name])[np.isfinite(exact[name])]
    ulp_floor = STORAGE_EPSILON[storage] * (float(np.max(finite)) if finite.size else 0.0)
    bound = 2 * naive_error + ulp_floor + 4 * STORAGE_EPSILON["float32"] * exact["terms"][name]
    assert np.all(np.isfinite(errors)), f"{name}: non-finite values where the reference has none"
    worst = np.unravel_index(np.argmax(errors - bound), errors.shape)
    assert np.all(errors <= bound), (
        f"{name} ({storage}): error {errors[worst]:.3g} at {worst} exceeds 2 x naive {naive_error:.3g} "
        f"+ floor {bound[worst] - 2 * naive_error:.3g}")
