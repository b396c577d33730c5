// Built instead of cuda/ when fattn is configured without CUDA support (FATTN_CUDA=OFF or no
// toolkit found): the CUDA backend is then never available.
#include "backend.h"
#include "error.h"

namespace fattn {

bool cuda_backend_available() noexcept { return false; }

std::unique_ptr<Backend> make_cuda_backend() {
    fail(FATTN_ERROR_NO_DEVICE, "this build of fattn has no CUDA support (configure with -DFATTN_CUDA=ON)");
}

}  // namespace fattn
