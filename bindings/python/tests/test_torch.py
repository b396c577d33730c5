"""fattn on PyTorch tensors: the autograd Function on CPU and, where a GPU is present, on CUDA.
Outputs and gradients are checked against torch.nn.functional.scaled_dot_product_attention in
float64 (the accuracy rule's yardstick: reference.attention's naive float32 computation).
Skipped as a whole without torch; the CUDA cases skip themselves without a GPU."""
import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch path is untested here")

import fattn  # noqa: E402
import reference  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the torch CUDA path is untested here"))]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim)
SHAPES = {
    "mha": (2, 4, 4, 33, 33, 64),
    "gqa-longer-keys": (1, 4, 2, 31, 70, 128),
    "mqa": (2, 2, 1, 16, 40, 32),
}


@contextlib.contextmanager
def cuda_may_refuse_float32(device, dtype):
    """The ABI lets the CUDA backend answer float32 with FATTN_ERROR_UNSUPPORTED: a skip there."""
    try:
        yield
    except fattn.UnsupportedError as error:
        if device == "cpu" or dtype != torch.float32:
            raise
        pytest.skip(f"the CUDA backend refuses float32: {error}")


@pytest.fixture
def generator(rng):
    return torch.Generator().manual_seed(int(rng.integers(2 ** 62)))


def random_tensor(generator, shape, dtype, device, layout="bhnd"):
    """Normal values in `dtype` on `device`; "bnhd" gives a [B,H,N,D] view of [B,N,H,D] memory."""
    batch, heads, seqlen, dim = shape
    memory_shape = (batch, seqlen, heads, dim) if layout == "bnhd" else shape
    x = torch.randn(memory_shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
    return x.transpose(1, 2) if layout == "bnhd" else x


def random_problem(generator, shape, dtype, device, layout="bhnd"):
    batch, heads_q, heads_kv, seqlen_q, seqlen_k, dim = shape
    q, dout = (random_tensor(generator, (batch, heads_q, seqlen_q, dim), dtype, device, layout) for _ in range(2))
    k, v = (random_tensor(generator, (batch, heads_kv, seqlen_k, dim), dtype, device, layout) for _ in range(2))
    return q, k, v, dout


def attention_and_grads(function, q, k, v, dout, compute_dtype=None):
    """function's output and gradients, with inputs cast to compute_dtype (a fresh leaf each)."""
    leaves = [x.detach().to(compute_dtype or x.dtype).requires_grad_() for x in (q, k, v)]
    out = function(*leaves)
    out.backward(dout.to(out.dtype))
    return {"out": out.detach(), "dq": leaves[0].grad, "dk": leaves[1].grad, "dv": leaves[2].grad}


def sdpa(causal, window, scale=None):
    """torch SDPA with fattn's masking semantics (bottom-right diagonal) as an explicit mask."""
    def function(q, k, v):
        mask = torch.from_numpy(reference.visible_keys(q.shape[2], k.shape[2], causal, window)).to(q.device)
        group = q.shape[1] // k.shape[1]
        return torch.nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), attn_mask=mask, scale=scale)
    return function


def check_against_sdpa(results, q, k, v, dout, storage, causal=False, window=(-1, -1), scale=None):
    expected = attention_and_grads(sdpa(causal, window, scale), q, k, v, dout, torch.float64)
    inputs = [x.double().cpu().numpy() for x in (q, k, v, dout)]
    options = dict(causal=causal, window=window, scale=scale)
    naive = reference.attention(*inputs, storage=storage, **options)
    # SDPA's float64 results are the exact values; the NumPy reference adds each element's term sizes.
    exact = dict(reference.attention(*inputs, **options), **{n: e.cpu().numpy() for n, e in expected.items()})
    for name, got in results.items():
        assert got.shape == expected[name].shape and got.device == q.device, name
        reference.assert_accurate(name, got.double().cpu().numpy(), exact, naive, storage)


def test_original_projects_snippet_runs_unchanged():
    batch, heads, seq_len, head_dim = 1, 2, 64, 32
    q = torch.randn(batch, heads, seq_len, head_dim, dtype=torch.float16)
    k = torch.randn(batch, heads, seq_len, head_dim, dtype=torch.float16)
    v = torch.randn(batch, heads, seq_len, head_dim, dtype=torch.float16)

    from fattn import attention
    output = attention(q, k, v, causal=True)

    assert output.shape == q.shape and output.dtype == torch.float16
    expected = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    assert torch.allclose(output.double(), expected, atol=2e-3)
    for x in (q, k, v):
        x.requires_grad_()
    attention(q, k, v, causal=True, sm_scale=None, warp_specialize=True).sum().backward()
    assert all(x.grad is not None and x.grad.dtype == torch.float16 for x in (q, k, v))


@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("storage", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_output_and_gradients_match_sdpa(generator, device, storage, shape, causal, layout):
    q, k, v, dout = random_problem(generator, SHAPES[shape], DTYPES[storage], device, layout)
    with cuda_may_refuse_float32(device, DTYPES[storage]):
        results = attention_and_grads(lambda *qkv: fattn.attention(*qkv, causal=causal), q, k, v, dout)
    assert all(result.dtype == DTYPES[storage] for result in results.values())
    check_against_sdpa(results, q, k, v, dout, storage, causal=causal)


@pytest.mark.parametrize("device", DEVICES)
def test_window_and_scale(generator, device):
    q, k, v, dout = random_problem(generator, SHAPES["gqa-longer-keys"], torch.bfloat16, device)
    results = attention_and_grads(
        lambda *qkv: fattn.attention(*qkv, window=(20, 6), sm_scale=0.2), q, k, v, dout)
    check_against_sdpa(results, q, k, v, dout, "bfloat16", window=(20, 6), scale=0.2)


@pytest.mark.parametrize("device", DEVICES)
def test_lower_level_forward_and_backward(generator, device):
    q, k, v, dout = random_problem(generator, SHAPES["mqa"], torch.float16, device, layout="bnhd")
    out, lse = fattn.forward(q, k, v, causal=True)
    dq, dk, dv = fattn.backward(q, k, v, out, dout, lse, causal=True)
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:3] and not out.requires_grad
    check_against_sdpa(dict(out=out, dq=dq, dk=dk, dv=dv), q, k, v, dout, "float16", causal=True)
    expected = reference.attention(*(x.cpu().numpy() for x in (q, k, v, dout)), causal=True)
    assert np.allclose(lse.cpu().numpy(), expected["lse"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_no_grad_returns_a_plain_tensor(generator, device):
    q, k, v, _ = random_problem(generator, SHAPES["mha"], torch.float16, device)
    for x in (q, k, v):
        x.requires_grad_()
    with torch.no_grad():
        out = fattn.attention(q, k, v, causal=True)
    assert not out.requires_grad and out.grad_fn is None
    assert torch.equal(out, fattn.forward(q.detach(), k.detach(), v.detach(), causal=True)[0])


@pytest.mark.parametrize("needs_grad", [(True, False, False), (False, True, True), (False, False, True)])
@pytest.mark.parametrize("device", DEVICES)
def test_gradients_for_any_subset_of_inputs(generator, device, needs_grad):
    q, k, v, dout = random_problem(generator, SHAPES["gqa-longer-keys"], torch.float16, device)

    def attention(*qkv):  # deterministic: the CUDA backward may otherwise vary in its last bits
        return fattn.attention(*qkv, causal=True, deterministic=True)
    everything = attention_and_grads(attention, q, k, v, dout)
    for x, needed in zip((q, k, v), needs_grad):
        x.requires_grad_(needed)
    attention(q, k, v).backward(dout)
    for x, needed, name in zip((q, k, v), needs_grad, ("dq", "dk", "dv")):
        assert (x.grad is not None) == needed, name
        if needed:
            assert torch.equal(x.grad, everything[name]), name


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_views_and_gradients(generator, device):
    # q: rows of a padded buffer (strided, last dim contiguous: no copy); k: every other element of
    # the last dim (copied); v: a [B,N,H,D] transpose. The loss sum() hands back a stride-0 dout.
    padded = random_tensor(generator, (1, 3, 21, 96), torch.float16, device)
    q = padded[..., :64]
    k = random_tensor(generator, (1, 3, 21, 128), torch.float16, device)[..., ::2]
    v = random_tensor(generator, (1, 3, 21, 64), torch.float16, device, layout="bnhd")
    dout = torch.ones_like(q)
    results = attention_and_grads(lambda *qkv: fattn.attention(*qkv, deterministic=True), q, k, v, dout)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    fattn.attention(*leaves, deterministic=True).sum().backward()
    assert all(torch.equal(leaf.grad, results[name]) for leaf, name in zip(leaves, ("dq", "dk", "dv")))
    check_against_sdpa(results, q, k, v, dout, "float16")


def test_mixed_devices_and_unsupported_dtypes_are_refused(generator):
    q, k, v, _ = random_problem(generator, SHAPES["mha"], torch.float32, "cpu")
    with pytest.raises(fattn.InvalidArgumentError, match="q.dtype=torch.float64"):
        fattn.attention(q.double(), k, v)
    with pytest.raises(fattn.InvalidArgumentError, match="expected a torch.Tensor like q"):
        fattn.attention(q, k.numpy(), v)
    if torch.cuda.is_available():
        with pytest.raises(fattn.InvalidArgumentError, match="k is on cpu but q is on cuda"):
            fattn.attention(q.cuda(), k, v.cuda())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_runs_on_the_current_stream(generator):
    q, k, v, dout = random_problem(generator, SHAPES["mha"], torch.bfloat16, "cuda")
    def attention(*qkv):
        return fattn.attention(*qkv, causal=True, deterministic=True)
    expected = attention_and_grads(attention, q, k, v, dout)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        # Inputs made on the side stream right before the call: only correct if fattn orders after them.
        q2, k2, v2 = (x * 1 for x in (q, k, v))
        results = attention_and_grads(attention, q2, k2, v2, dout)
    side.synchronize()
    for name in expected:
        assert torch.equal(results[name], expected[name]), name


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_runs_on_the_tensors_device(generator):
    q, k, v, _ = random_problem(generator, SHAPES["mha"], torch.float16, "cuda:1")
    out = fattn.attention(q, k, v)
    assert out.device == q.device
    assert torch.equal(out.cpu(), fattn.attention(q.cpu().cuda(0), k.cpu().cuda(0), v.cpu().cuda(0)).cpu())
