"""fattn on NumPy arrays (the CPU backend): outputs, LSE and gradients against the float64
reference for every dtype, masks, GQA/MQA, odd lengths and both layouts; views without copies;
determinism; several threads at once."""
import threading

import numpy as np
import pytest

import fattn
import reference
from conftest import storage_dtype

# (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim)
SHAPES = {
    "mha": (2, 4, 4, 17, 17, 32),
    "gqa-longer-keys": (1, 4, 2, 33, 65, 64),
    "mqa-odd": (1, 3, 1, 7, 129, 16),
    "single-key": (1, 2, 2, 5, 1, 8),
}
MASKS = {
    "none": dict(causal=False, window=(-1, -1)),
    "causal": dict(causal=True, window=(-1, -1)),
    "window": dict(causal=False, window=(5, 3)),
}


def random_array(rng, shape, dtype, layout="bhnd"):
    """Normal values stored in `dtype`; "bnhd" returns a [B,H,N,D] view of [B,N,H,D] memory."""
    if layout == "bnhd":
        batch, heads, seqlen, dim = shape
        return random_array(rng, (batch, seqlen, heads, dim), dtype).transpose(0, 2, 1, 3)
    return rng.standard_normal(shape).astype(dtype)


def random_problem(rng, shape, dtype, layout="bhnd"):
    batch, heads_q, heads_kv, seqlen_q, seqlen_k, dim = shape
    q, dout = (random_array(rng, (batch, heads_q, seqlen_q, dim), dtype, layout) for _ in range(2))
    k, v = (random_array(rng, (batch, heads_kv, seqlen_k, dim), dtype, layout) for _ in range(2))
    return q, k, v, dout


def check_against_reference(q, k, v, dout, storage, results, **options):
    exact = reference.attention(q, k, v, dout, **options)
    naive = reference.attention(q, k, v, dout, storage=storage, **options)
    for name, got in results.items():
        assert got.shape == exact[name].shape, name
        reference.assert_accurate(name, got, exact, naive, storage)


@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("storage", ["float32", "float16", "bfloat16"])
def test_forward_and_backward_match_reference(rng, storage, shape, mask, layout):
    dtype = storage_dtype(storage)
    q, k, v, dout = random_problem(rng, SHAPES[shape], dtype, layout)
    out, lse = fattn.forward(q, k, v, **MASKS[mask])
    dq, dk, dv = fattn.backward(q, k, v, out, dout, lse, **MASKS[mask])
    assert out.dtype == dq.dtype == dk.dtype == dv.dtype == dtype and lse.dtype == np.float32
    check_against_reference(q, k, v, dout, storage,
                            dict(out=out, lse=lse, dq=dq, dk=dk, dv=dv), **MASKS[mask])


@pytest.mark.parametrize("storage", ["float16", "bfloat16"])
def test_accuracy_rule_passes_exact_results_and_rejects_a_wrong_element(rng, storage):
    # The rule's floor must admit the exact result rounded to storage (what a perfect kernel
    # returns), yet catch one element off by twice what the rule allows.
    q, k, v, dout = random_problem(rng, (2, 2, 1, 16, 40, 32), storage_dtype(storage))
    exact = reference.attention(q, k, v, dout, causal=True)
    naive = reference.attention(q, k, v, dout, causal=True, storage=storage)
    for name in ("out", "dq", "dk", "dv"):
        perfect = reference.round_to_storage(exact[name], storage).astype(np.float64)
        reference.assert_accurate(name, perfect, exact, naive, storage)
        allowed = 2 * np.max(np.abs(naive[name] - exact[name])) + \
            reference.STORAGE_EPSILON[storage] * np.max(np.abs(exact[name]))
        wrong = perfect.copy()
        wrong.flat[7] += 2 * allowed
        with pytest.raises(AssertionError):
            reference.assert_accurate(name, wrong, exact, naive, storage)


def test_attention_returns_forward_output_in_the_layout_of_q(rng):
    q, k, v, _ = random_problem(rng, SHAPES["gqa-longer-keys"], np.float32, layout="bnhd")
    out = fattn.attention(q, k, v, causal=True)
    assert np.array_equal(out, fattn.forward(q, k, v, causal=True)[0])
    # [B,N,H,D] memory in, [B,N,H,D] memory out: transposing back gives a contiguous array.
    assert out.transpose(0, 2, 1, 3).flags.c_contiguous


def test_explicit_scale_and_lse_with_unit_head_dim(rng):
    q, k, v, dout = random_problem(rng, SHAPES["mha"], np.float32)
    out, lse = fattn.forward(q, k, v, sm_scale=0.37)
    dq, dk, dv = fattn.backward(q, k, v, out, dout, lse[..., None], sm_scale=0.37)  # the ABI's [B,H,N,1]
    check_against_reference(q, k, v, dout, "float32", dict(out=out, lse=lse, dq=dq, dk=dk, dv=dv),
                            scale=0.37)


def test_rows_that_see_no_key(rng):
    # Causal with more queries than keys: the first Nq - Nk rows see nothing (bottom-right diagonal).
    q, k, v, dout = random_problem(rng, (1, 2, 2, 12, 5, 16), np.float32)
    out, lse = fattn.forward(q, k, v, causal=True)
    dq, dk, dv = fattn.backward(q, k, v, out, dout, lse, causal=True)
    assert np.all(out[:, :, :7] == 0) and np.all(np.isneginf(lse[:, :, :7]))
    assert np.all(dq[:, :, :7] == 0) and np.all(np.isfinite(lse[:, :, 7:]))
    check_against_reference(q, k, v, dout, "float32", dict(out=out, lse=lse, dq=dq, dk=dk, dv=dv),
                            causal=True)


def test_strided_views_are_read_in_place(rng):
    # Rows padded to 48 elements of which 32 are used: strides without a copy.
    padded = rng.standard_normal((3, 2, 4, 19, 48)).astype(np.float32)
    q, k, v = (padded[i, ..., :32] for i in range(3))
    assert not q.flags.c_contiguous
    dout = rng.standard_normal(q.shape).astype(np.float32)
    out, lse = fattn.forward(q, k, v, window=(4, 4))
    dq, dk, dv = fattn.backward(q, k, v, out, dout, lse, window=(4, 4))
    check_against_reference(q, k, v, dout, "float32", dict(out=out, lse=lse, dq=dq, dk=dk, dv=dv),
                            window=(4, 4))


def test_non_contiguous_last_dimension_is_copied(rng):
    wide = rng.standard_normal((1, 2, 9, 64)).astype(np.float16)
    q, k, v = wide[..., ::2], wide[..., 1::2], wide[:, ::-1, ::-1, :32]
    dout = rng.standard_normal(q.shape).astype(np.float16)
    out, lse = fattn.forward(q, k, v)
    dq, dk, dv = fattn.backward(q, k, v, out, dout, lse)
    check_against_reference(q, k, v, dout, "float16", dict(out=out, lse=lse, dq=dq, dk=dk, dv=dv))


def test_results_are_bit_identical_run_to_run(rng):
    q, k, v, dout = random_problem(rng, SHAPES["gqa-longer-keys"], np.float32)
    first = fattn.forward(q, k, v, causal=True)
    second = fattn.forward(q, k, v, causal=True)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    grads = [fattn.backward(q, k, v, *first[:1], dout, first[1], causal=True, deterministic=True)
             for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*grads))


def test_warp_specialize_is_accepted(rng):
    q, k, v, _ = random_problem(rng, SHAPES["mha"], np.float32)
    assert np.array_equal(fattn.attention(q, k, v, warp_specialize=True), fattn.attention(q, k, v))


def test_threads_use_their_own_handles(rng):
    problems = [random_problem(rng, SHAPES["mha"], np.float32) for _ in range(4)]
    expected = [fattn.attention(q, k, v, causal=True) for q, k, v, _ in problems]
    mismatches = []

    def worker(index):
        q, k, v, _ = problems[index]
        for _ in range(20):
            if not np.array_equal(fattn.attention(q, k, v, causal=True), expected[index]):
                mismatches.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(problems))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []
