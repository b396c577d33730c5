// The backward's host side: workspace layout and the launch sequence. The kernels come in the
// next commit; until then the CUDA backward reports FATTN_ERROR_UNSUPPORTED.
#include "dispatch.h"
#include "error.h"
#include "launch.h"

namespace fattn::cuda {

std::size_t backward_workspace_bytes(const AttnBwdParams& params, const cudaDeviceProp&) {
    const int64_t rows = params.batch * params.heads_q * ((params.seqlen_q + 127) / 128 * 128);
    return static_cast<std::size_t>(rows) * 2 * sizeof(float);
}

void launch_backward(const AttnBwdParams&, void*, const cudaDeviceProp&, cudaStream_t) {
    fail(FATTN_ERROR_UNSUPPORTED, "the CUDA backward is not implemented yet");
}

}  // namespace fattn::cuda
