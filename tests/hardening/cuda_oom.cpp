// CUDA out of memory (issue 6): a backward whose device workspace cannot fit returns
// FATTN_ERROR_OUT_OF_MEMORY, writes nothing, and the handle's next calls succeed and are right.
//
// Making the request real with small inputs: the backward's workspace holds an fp32 dq
// accumulator, 4 bytes per element of dq, while dq itself (bf16) takes 2. dq must be real memory
// (an output may not alias itself), so it is sized to 40% of the free device memory; the
// workspace then needs at least 80% with 60% left. Every input (q, k, v, o, dout, lse) is a
// stride-0 broadcast of one tiny buffer, which the ABI allows for inputs, and dk/dv are one row
// (Nk = 1). On an 80 GB card dq has more than 2^31 elements, so the 64-bit paths of validation and
// workspace sizing run too. Sequence on one handle: small backward (workspace exists), huge
// backward (OOM, dq/dk/dv untouched), small backward again (succeeds, matches the reference).
// Without a usable GPU it prints "CUDA part skipped: ..." and exits 0.
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "harness.h"

namespace {

using namespace fattn_hardening;

int failures = 0;

void expect(bool condition, const std::string& what) {
    std::printf("%s: %s\n", condition ? "ok  " : "FAIL", what.c_str());
    if (!condition) ++failures;
}

void check_cuda(cudaError_t status, const char* what) {
    if (status != cudaSuccess) {
        std::printf("FAIL: %s: %s\n", what, cudaGetErrorString(status));
        std::exit(1);
    }
}

// True when every byte of the device buffer still equals `poison` (checked in host-sized chunks).
bool device_bytes_equal(const void* device, size_t bytes, unsigned char poison) {
    std::vector<unsigned char> chunk(size_t{256} << 20);
    for (size_t done = 0; done < bytes; done += chunk.size()) {
        const size_t now = std::min(chunk.size(), bytes - done);
        check_cuda(cudaMemcpy(chunk.data(), static_cast<const unsigned char*>(device) + done, now, cudaMemcpyDeviceToHost),
                   "cudaMemcpy of dq back to the host");
        for (size_t i = 0; i < now; ++i)
            if (chunk[i] != poison) return false;
    }
    return true;
}

// A small backward on `handle`, checked against the reference; returns its status.
fattn_status_t small_backward(fattn_handle_t handle, const char* when) {
    std::mt19937_64 rng(7);
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    desc.causal = 1;
    Problem problem({2, 4, 2, 77, 91, 64}, FATTN_DTYPE_BF16, desc);
    problem.randomize(rng);
    problem.store_forward(problem.reference_forward());
    const Snapshots poisoned = snapshot(problem.backward_outputs());
    const fattn_status_t status = run(handle, FATTN_BACKEND_CUDA, problem, Op::Backward);
    expect(status == FATTN_SUCCESS, std::string("small backward ") + when + " succeeds (" + status_name(status) + ")");
    if (status == FATTN_SUCCESS) {
        const std::string why = check_against_reference(problem, Op::Backward, poisoned);
        expect(why.empty(), std::string("small backward ") + when + " matches the float64 reference " + why);
    }
    return status;
}

}  // namespace

int main() {
    if (!fattn_backend_available(FATTN_BACKEND_CUDA)) {
        std::printf("CUDA part skipped: no usable GPU (or a build without CUDA)\n");
        return 0;
    }
    fattn_handle_t handle = nullptr;
    check_cuda(cudaSetDevice(0), "cudaSetDevice");
    if (fattn_create(&handle, FATTN_BACKEND_CUDA) != FATTN_SUCCESS) {
        std::printf("FAIL: fattn_create: %s\n", fattn_last_error());
        return 1;
    }
    small_backward(handle, "before");

    constexpr int64_t kDim = 128;
    size_t free_bytes = 0, total_bytes = 0;
    check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const int64_t rows = static_cast<int64_t>(free_bytes * 2 / 5) / 2 / kDim;  // dq: 40% of free memory
    const size_t dq_bytes = static_cast<size_t>(rows * kDim) * 2;
    void *dq = nullptr, *tiny = nullptr, *lse = nullptr, *dk = nullptr, *dv = nullptr;
    check_cuda(cudaMalloc(&dq, dq_bytes), "cudaMalloc dq");
    check_cuda(cudaMalloc(&tiny, kDim * 2), "cudaMalloc inputs");
    check_cuda(cudaMalloc(&lse, 4), "cudaMalloc lse");
    check_cuda(cudaMalloc(&dk, kDim * 2), "cudaMalloc dk");
    check_cuda(cudaMalloc(&dv, kDim * 2), "cudaMalloc dv");
    check_cuda(cudaMemset(tiny, 0x3C, kDim * 2), "cudaMemset inputs");  // bf16 0x3C3C ~ 0.0115
    check_cuda(cudaMemset(lse, 0, 4), "cudaMemset lse");
    for (void* output : {dq, dk, dv}) check_cuda(cudaMemset(output, 0xFF, output == dq ? dq_bytes : kDim * 2), "poison");
    std::printf("device: %.1f GiB free of %.1f GiB; dq [1,1,%lld,%lld] bf16 = %.1f GiB (%lld elements)\n",
                free_bytes / 1073741824.0, total_bytes / 1073741824.0, static_cast<long long>(rows),
                static_cast<long long>(kDim), dq_bytes / 1073741824.0, static_cast<long long>(rows * kDim));

    auto tensor = [&](void* data, int32_t dtype, int64_t seqlen, int64_t dim, bool broadcast) {
        fattn_tensor_t t{};
        t.data = data;
        t.dtype = dtype;
        const int64_t shape[4] = {1, 1, seqlen, dim};
        for (int i = 0; i < 4; ++i) t.shape[i] = shape[i];
        t.strides[0] = broadcast ? 0 : seqlen * dim;
        t.strides[1] = broadcast ? 0 : seqlen * dim;
        t.strides[2] = broadcast ? 0 : dim;
        t.strides[3] = 1;
        return t;
    };
    const fattn_tensor_t q = tensor(tiny, FATTN_DTYPE_BF16, rows, kDim, true), k = tensor(tiny, FATTN_DTYPE_BF16, 1, kDim, false),
                         v = k, o = q, dout = q, lse_t = tensor(lse, FATTN_DTYPE_F32, rows, 1, true),
                         dq_t = tensor(dq, FATTN_DTYPE_BF16, rows, kDim, false), dk_t = tensor(dk, FATTN_DTYPE_BF16, 1, kDim, false),
                         dv_t = tensor(dv, FATTN_DTYPE_BF16, 1, kDim, false);
    const fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    const fattn_status_t status = fattn_backward(handle, &desc, &q, &k, &v, &o, &dout, &lse_t, &dq_t, &dk_t, &dv_t);
    const std::string message = fattn_last_error();
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the huge backward");
    expect(status == FATTN_ERROR_OUT_OF_MEMORY,
           std::string("huge backward returns FATTN_ERROR_OUT_OF_MEMORY (got ") + status_name(status) + ": " + message + ")");
    expect(device_bytes_equal(dq, dq_bytes, 0xFF), "huge backward wrote nothing into dq");
    expect(device_bytes_equal(dk, kDim * 2, 0xFF) && device_bytes_equal(dv, kDim * 2, 0xFF), "huge backward wrote nothing into dk, dv");
    for (void* buffer : {dq, tiny, lse, dk, dv}) cudaFree(buffer);

    small_backward(handle, "after");
    fattn_destroy(handle);
    std::printf("cuda_oom: %s\n", failures == 0 ? "0 failures" : "FAILED");
    return failures == 0 ? 0 : 1;
}
