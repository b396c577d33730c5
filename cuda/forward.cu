// launch_forward: picks the forward kernel instantiation for the problem's kernel family, head-dim
// tile and dtype (dispatch.h, the one list) and enqueues it. The kernels themselves are compiled
// in cuda/inst/.
#include "dispatch.h"
#include "fwd_launch.h"
#include "hopper/fwd_launch.h"
#include "launch.h"

namespace fattn::cuda {

void launch_forward(const AttnParams& params, void* workspace, const cudaDeviceProp& device, KernelFamily family,
                    cudaStream_t stream) {
    if (family == KernelFamily::Hopper && sm90::forward_supported(params)) {
        FATTN_SM90_HEADDIM_SWITCH(params.head_dim, kHeadDim, [&] {
            FATTN_DTYPE_SWITCH(params.dtype, Element,
                               [&] { sm90::run_forward<kHeadDim, Element>(params, workspace, device, stream); });
        });
        return;
    }
    FATTN_HEADDIM_SWITCH(params.head_dim, kHeadDim, [&] {
        FATTN_DTYPE_SWITCH(params.dtype, Element, [&] { run_forward<kHeadDim, Element>(params, device, stream); });
    });
}

}  // namespace fattn::cuda
