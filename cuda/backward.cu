// The backward's host entry points (launch.h): the workspace size, and the dispatch of a problem
// to the kernels instantiated for its (tile width, dtype) in cuda/inst/bwd_*.cu. The kernels and
// their launch sequence live in bwd_kernel.cuh; this file compiles none of them.
#include "bwd_launch.cuh"
#include "dispatch.h"
#include "launch.h"

namespace fattn::cuda {

std::size_t backward_workspace_bytes(const AttnBwdParams& params, const cudaDeviceProp&) {
    return FATTN_HEADDIM_SWITCH(params.head_dim, kHeadDim,
                                [&] { return BackwardWorkspace::bytes(params, kHeadDim); });
}

void launch_backward(const AttnBwdParams& params, void* workspace, const cudaDeviceProp& device,
                     cudaStream_t stream) {
    FATTN_HEADDIM_SWITCH(params.head_dim, kHeadDim, [&] {
        const BackwardWorkspace carved = BackwardWorkspace::carve(workspace, params, kHeadDim);
        FATTN_DTYPE_SWITCH(params.dtype, Element,
                           [&] { run_backward<kHeadDim, Element>(params, carved, device, stream); });
    });
}

}  // namespace fattn::cuda
