// Backend: what a handle dispatches to. Chosen once, at fattn_create, by a device query.
// The API layer validates arguments and builds AttnParams; a backend then only answers whether it
// can serve the request (check_*) and computes (forward/backward). Backends report failures by
// throwing fattn::Error; api.cpp turns them into statuses.
#pragma once

#include <memory>

#include "fattn.h"
#include "params.h"

namespace fattn {

class Backend {
public:
    virtual ~Backend() = default;

    virtual fattn_backend_t kind() const noexcept = 0;

    // CUDA: a cudaStream_t; CPU: only nullptr (anything else is FATTN_ERROR_INVALID_ARGUMENT).
    virtual void set_stream(void* stream) = 0;

    // Capability checks, run by the API layer after argument validation and before any output is
    // touched: FATTN_ERROR_UNSUPPORTED for a valid request this backend cannot run (head_dim,
    // dtype), FATTN_ERROR_INVALID_ARGUMENT for memory it cannot address (pageable host memory
    // given to the CUDA backend).
    virtual void check_forward(const AttnParams& params) const = 0;
    virtual void check_backward(const AttnBwdParams& params) const = 0;

    // o (and lse when non-null) = attention(q, k, v). The CPU backend returns when done; the CUDA
    // backend enqueues on its stream and returns.
    virtual void forward(const AttnParams& params) = 0;
    // dq, dk, dv from q, k, v, o, dout and the forward's lse.
    virtual void backward(const AttnBwdParams& params) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();

// True when the library was built with CUDA support and the current device (cudaGetDevice) has
// compute capability >= 8.0. Never throws; false on a machine with no driver.
bool cuda_backend_available() noexcept;
// Throws Error(FATTN_ERROR_NO_DEVICE) when !cuda_backend_available().
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace fattn
