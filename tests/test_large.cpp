// A problem whose tensors hold more than 2^31 elements, on the CUDA backend: every element offset
// past 2^31 must be computed in 64 bits, in validation, in the launchers and in the kernels of both
// families (gpu_suite.sh runs the CUDA cases again under FATTN_CUDA_KERNELS=sm80).
//
// [B=1, Hq=2, Hkv=1, N=2^24+3, D=64] bf16 with a sliding window of 48 keys (right edge 0): q, o,
// dout and dq hold 2^31 + 384 elements each, yet the window keeps the work to a few milliseconds.
// About 35 GB of device memory (the tensors and fattn's fp32 dq workspace); skipped, saying so, on
// a smaller GPU and in the sanitizers' quick mode. Inputs are one random block copied over each
// tensor (host generation of 2^31 values would take minutes); outputs are poisoned with NaN.
//
// Checked: windows of rows at the start, in the middle, and at the end of head 1 (whose elements
// lie past 2^31), each cut out with the keys its rows see into a small problem on the host, whose
// float64 reference and naive yardstick judge fattn's o, lse and dq there by the suite's accuracy
// rule, and dk, dv of the keys whose every query is inside the window.
#if defined(FATTN_TEST_WITH_CUDA)

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "harness.h"
#include "scenario.h"

namespace {

using namespace fattn_test;

constexpr int64_t kHeads = 2, kDim = 64, kWindow = 48;
constexpr int64_t kLength = (int64_t{1} << 24) + 3;
constexpr int64_t kRows = 64;  // rows per checked window
constexpr fattn_dtype_t kDtype = FATTN_DTYPE_BF16;

// Fills the buffer with copies of `block`: one host copy, then device-to-device doubling.
void fill_repeating(const DeviceBuffer& buffer, const std::vector<unsigned char>& block) {
    size_t done = std::min(block.size(), buffer.bytes());
    check_cuda(cudaMemcpy(buffer.data(), block.data(), done, cudaMemcpyHostToDevice), "cudaMemcpy block");
    while (done < buffer.bytes()) {
        const size_t count = std::min(done, buffer.bytes() - done);
        check_cuda(cudaMemcpy(buffer.data() + done, buffer.data(), count, cudaMemcpyDeviceToDevice), "cudaMemcpy fill");
        done += count;
    }
}

// The [1, heads, kLength, columns] tensor in `buffer`, contiguous.
fattn_tensor_t full_view(const DeviceBuffer& buffer, fattn_dtype_t dtype, int64_t heads, int64_t columns) {
    fattn_tensor_t view{};
    view.data = buffer.data();
    view.dtype = dtype;
    const int64_t shape[4] = {1, heads, kLength, columns};
    const int64_t strides[4] = {heads * kLength * columns, kLength * columns, columns, 1};
    for (int i = 0; i < 4; ++i) {
        view.shape[i] = shape[i];
        view.strides[i] = strides[i];
    }
    return view;
}

// Rows [row0, row0 + host.shape()[2]) of every head of the device tensor, into `host` ([1, heads,
// rows, columns], contiguous).
void copy_rows(HostTensor& host, const DeviceBuffer& buffer, int64_t row0) {
    const Shape& shape = host.shape();
    const size_t row_bytes = static_cast<size_t>(shape[3] * dtype_bytes(host.dtype()));
    for (int64_t h = 0; h < shape[1]; ++h)
        check_cuda(cudaMemcpy(host.bytes() + h * shape[2] * row_bytes, buffer.data() + (h * kLength + row0) * row_bytes,
                              shape[2] * row_bytes, cudaMemcpyDeviceToHost),
                   "cudaMemcpy rows");
}

// Keys [first, first + count) of a [1, 1, Nk, D] dense tensor.
template <typename Real>
Dense<Real> key_slice(const Dense<Real>& dense, int64_t first, int64_t count) {
    Dense<Real> out(Shape{1, 1, count, dense.shape[3]});
    for (int64_t n = 0; n < count; ++n)
        for (int64_t d = 0; d < dense.shape[3]; ++d) out.at(0, 0, n, d) = dense.at(0, 0, first + n, d);
    return out;
}

struct Tensors {
    DeviceBuffer q, k, v, dout, o, lse, dq, dk, dv;
};

// The window of query rows [row0, row0 + kRows + kWindow) and the keys they see,
// [row0 - kWindow, row0 + kRows + kWindow), as a small problem; fattn's outputs there against its
// reference. dk and dv only for keys [row0, row0 + kRows), whose queries all lie in the window.
std::string check_window(const Tensors& t, int64_t row0, const fattn_attention_desc_t& desc) {
    const int64_t nq = kRows + kWindow, nk = kRows + 2 * kWindow, key0 = row0 - kWindow;
    const Shape q_shape{1, kHeads, nq, kDim}, kv_shape{1, 1, nk, kDim}, part_shape{1, 1, kRows, kDim};
    HostTensor q(kDtype, q_shape, Layout::BHND), dout(kDtype, q_shape, Layout::BHND), o(kDtype, q_shape, Layout::BHND),
        dq(kDtype, q_shape, Layout::BHND), k(kDtype, kv_shape, Layout::BHND), v(kDtype, kv_shape, Layout::BHND),
        lse = make_lse(q_shape), dk(kDtype, part_shape, Layout::BHND), dv(kDtype, part_shape, Layout::BHND);
    copy_rows(q, t.q, row0);
    copy_rows(dout, t.dout, row0);
    copy_rows(o, t.o, row0);
    copy_rows(dq, t.dq, row0);
    copy_rows(lse, t.lse, row0);
    copy_rows(k, t.k, key0);
    copy_rows(v, t.v, key0);
    copy_rows(dk, t.dk, row0);
    copy_rows(dv, t.dv, row0);

    // Nk - Nq = kWindow aligns the window's diagonal with the whole problem's (Nq = Nk there).
    const auto ref_q = gather<double>(q.view()), ref_k = gather<double>(k.view()), ref_v = gather<double>(v.view()),
               ref_dout = gather<double>(dout.view());
    const auto reference = attention_forward(ref_q, ref_k, ref_v, desc, kDtype);
    auto backward_inputs = reference;
    backward_inputs.o = gather<double>(o.view());
    const auto reference_grad = attention_backward(ref_q, ref_k, ref_v, ref_dout, backward_inputs, desc, kDtype);
    const auto naive_q = gather<float>(q.view()), naive_k = gather<float>(k.view()), naive_v = gather<float>(v.view()),
               naive_dout = gather<float>(dout.view());
    const auto naive = attention_forward(naive_q, naive_k, naive_v, desc, kDtype);
    const auto naive_grad = attention_backward(naive_q, naive_k, naive_v, naive_dout, naive, desc, kDtype);

    const std::vector<bool> none_q(static_cast<size_t>(o.count()), false),
        none_lse(static_cast<size_t>(lse.count()), false), none_kv(static_cast<size_t>(dk.count()), false);
    const std::string failures =
        compare_output("o", o, reference.o, naive.o, none_q, reference.o_terms, reference.o_score_terms) +
        compare_output("lse", lse, reference.lse, naive.lse, none_lse, reference.lse_terms) +
        compare_output("dq", dq, reference_grad.dq, naive_grad.dq, none_q, reference_grad.dq_terms,
                       reference_grad.dq_score_terms) +
        compare_output("dk", dk, key_slice(reference_grad.dk, kWindow, kRows), key_slice(naive_grad.dk, kWindow, kRows),
                       none_kv, key_slice(reference_grad.dk_terms, kWindow, kRows),
                       key_slice(reference_grad.dk_score_terms, kWindow, kRows)) +
        compare_output("dv", dv, key_slice(reference_grad.dv, kWindow, kRows), key_slice(naive_grad.dv, kWindow, kRows),
                       none_kv, key_slice(reference_grad.dv_terms, kWindow, kRows),
                       key_slice(reference_grad.dv_score_terms, kWindow, kRows));
    return failures.empty() ? "" : "rows from " + std::to_string(row0) + ": " + failures;
}

}  // namespace

TEST_CASE("cuda: tensors of more than 2^31 elements (64-bit offsets), forward and backward") {
    if (cuda_unavailable()) return;
    if (quick_mode()) {
        MESSAGE("CUDA cases skipped: the 2^31-element case is left out of quick (sanitizer) runs");
        return;
    }
    const size_t q_bytes = static_cast<size_t>(kHeads * kLength * kDim * 2), kv_bytes = q_bytes / kHeads,
                 lse_bytes = static_cast<size_t>(kHeads * kLength * 4);
    const size_t needed = 4 * q_bytes + 4 * kv_bytes + lse_bytes + 2 * q_bytes /* fp32 dq workspace */ + (size_t{2} << 30);
    size_t free_bytes = 0, total_bytes = 0;
    check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    if (free_bytes < needed) {
        MESSAGE("CUDA cases skipped: the 2^31-element case needs " << (needed >> 30) << " GiB of device memory, "
                                                                   << (free_bytes >> 30) << " GiB free");
        return;
    }
    REQUIRE(kHeads * kLength * kDim > (int64_t{1} << 31));

    const Tensors t{DeviceBuffer(q_bytes),  DeviceBuffer(kv_bytes), DeviceBuffer(kv_bytes),
                    DeviceBuffer(q_bytes),  DeviceBuffer(q_bytes),  DeviceBuffer(lse_bytes),
                    DeviceBuffer(q_bytes),  DeviceBuffer(kv_bytes), DeviceBuffer(kv_bytes)};
    std::mt19937_64 rng = random_stream("2^31 elements");
    for (const DeviceBuffer* input : {&t.q, &t.k, &t.v, &t.dout}) {
        HostTensor block(kDtype, Shape{1, 1, 4099, kDim}, Layout::BHND);  // 4099 rows: blocks fall across rows
        block.fill_random(rng);
        fill_repeating(*input, std::vector<unsigned char>(block.bytes(), block.bytes() + block.byte_size()));
    }
    for (const DeviceBuffer* output : {&t.o, &t.lse, &t.dq, &t.dk, &t.dv})
        check_cuda(cudaMemset(output->data(), 0xff, output->bytes()), "cudaMemset poison");

    const Handle handle(FATTN_BACKEND_CUDA);
    REQUIRE(handle.create_status() == FATTN_SUCCESS);
    const Problem problem = Problem(kDtype, kLength, kLength, kDim).with_heads(1, kHeads, 1).window(kWindow, 0);
    const fattn_tensor_t q = full_view(t.q, kDtype, kHeads, kDim), k = full_view(t.k, kDtype, 1, kDim),
                         v = full_view(t.v, kDtype, 1, kDim), dout = full_view(t.dout, kDtype, kHeads, kDim),
                         o = full_view(t.o, kDtype, kHeads, kDim), lse = full_view(t.lse, FATTN_DTYPE_F32, kHeads, 1),
                         dq = full_view(t.dq, kDtype, kHeads, kDim), dk = full_view(t.dk, kDtype, 1, kDim),
                         dv = full_view(t.dv, kDtype, 1, kDim);
    REQUIRE_MESSAGE(fattn_forward(handle.get(), &problem.desc, &q, &k, &v, &o, &lse) == FATTN_SUCCESS,
                    std::string(fattn_last_error()));
    REQUIRE_MESSAGE(fattn_backward(handle.get(), &problem.desc, &q, &k, &v, &o, &dout, &lse, &dq, &dk, &dv) ==
                        FATTN_SUCCESS,
                    std::string(fattn_last_error()));
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");

    // The window problems' own mask: rows [0, nq) see keys [i, i + kWindow] of [0, nk).
    const Problem window = Problem(kDtype, kRows + kWindow, kRows + 2 * kWindow, kDim).window(kWindow, 0);
    for (const int64_t row0 : {kWindow, kLength / 2 + 17, kLength - kRows - kWindow}) {
        const std::string failures = check_window(t, row0, window.desc);
        CHECK_MESSAGE(failures.empty(), failures);
    }
}

#endif  // FATTN_TEST_WITH_CUDA
