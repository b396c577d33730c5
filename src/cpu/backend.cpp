// The CPU backend's host side: capability checks, the handle's scratch, and the calls into the
// kernels (forward.cpp, backward.cpp). The scratch is one HostBuffer per handle, grown before the
// kernels start and kept across calls, so a call allocates at most once and an allocation failure
// (real or injected) leaves every output untouched.
#include <omp.h>

#include "backend.h"
#include "error.h"
#include "kernels.h"
#include "memory.h"

namespace fattn {
namespace {

constexpr int64_t kMaxHeadDim = 256;

class CpuBackend final : public Backend {
public:
    fattn_backend_t kind() const noexcept override { return FATTN_BACKEND_CPU; }

    void set_stream(void* stream) override {
        if (stream != nullptr)
            fail(FATTN_ERROR_INVALID_ARGUMENT, "cuda_stream=", stream,
                 " must be NULL: the CPU backend has no streams");
    }

    void check_forward(const AttnParams& params) const override { check_head_dim(params); }
    void check_backward(const AttnBwdParams& params) const override { check_head_dim(params); }

    void forward(const AttnParams& params) override {
        const int threads = omp_get_max_threads();
        scratch_.reserve(cpu::forward_scratch_bytes(params, threads), "the CPU forward's tiles");
        cpu::forward(params, static_cast<float*>(scratch_.data()), threads);
    }

    void backward(const AttnBwdParams& params) override {
        const int threads = omp_get_max_threads();
        scratch_.reserve(cpu::backward_scratch_bytes(params, threads), "the CPU backward's tiles and accumulators");
        cpu::backward(params, static_cast<float*>(scratch_.data()), threads);
    }

private:
    static void check_head_dim(const AttnParams& params) {
        if (params.head_dim > kMaxHeadDim)
            fail(FATTN_ERROR_UNSUPPORTED, "q.shape[3]=", params.head_dim,
                 ": the CPU backend supports head_dim 1 to ", kMaxHeadDim);
    }

    HostBuffer scratch_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace fattn
