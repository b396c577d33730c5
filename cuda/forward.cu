// launch_forward: picks the forward kernel instantiation for the problem's head-dim tile and dtype
// (dispatch.h, the one list) and enqueues it. The kernels themselves are compiled in cuda/inst/.
#include "dispatch.h"
#include "fwd_launch.h"
#include "launch.h"

namespace fattn::cuda {

void launch_forward(const AttnParams& params, const cudaDeviceProp& device, cudaStream_t stream) {
    FATTN_HEADDIM_SWITCH(params.head_dim, kHeadDim, [&] {
        FATTN_DTYPE_SWITCH(params.dtype, Element, [&] { run_forward<kHeadDim, Element>(params, device, stream); });
    });
}

}  // namespace fattn::cuda
