// The backward's host entry points (launch.h): the workspace size, and the dispatch of a problem
// to the kernels instantiated for its kernel family, tile width and dtype (cuda/inst/bwd_*.cu for
// sm_80, bwd_sm90_*.cu for Hopper). The kernels and their launch sequences live in bwd_kernel.cuh
// and hopper/bwd_kernel.cuh; this file compiles none of them.
#include <algorithm>

#include "bwd_launch.cuh"
#include "dispatch.h"
#include "hopper/bwd_launch.h"
#include "launch.h"

namespace fattn::cuda {
namespace {

// The fp32 dQ sum's row width (BackwardWorkspace): the tile width of the kernel family that
// serves the problem. The family is chosen after the workspace is sized, so a head_dim both
// families serve gets the wider of their tiles (they differ only for head_dim <= 32).
int dq_tile_width(int64_t head_dim) {
    const int sm80_width = FATTN_HEADDIM_SWITCH(head_dim, kHeadDim, [] { return kHeadDim; });
    if (head_dim > sm90::kMaxBackwardHeadDim) return sm80_width;
    return std::max(sm80_width, FATTN_SM90_HEADDIM_SWITCH(head_dim, kHeadDim, [] { return kHeadDim; }));
}

}  // namespace

std::size_t backward_workspace_bytes(const AttnBwdParams& params, const cudaDeviceProp&) {
    return BackwardWorkspace::bytes(params, dq_tile_width(params.head_dim));
}

void launch_backward(const AttnBwdParams& params, void* workspace, const cudaDeviceProp& device, KernelFamily family,
                     cudaStream_t stream) {
    if (family == KernelFamily::Hopper && sm90::backward_supported(params)) {
        FATTN_SM90_HEADDIM_SWITCH(params.head_dim, kHeadDim, [&] {
            const BackwardWorkspace carved = BackwardWorkspace::carve(workspace, params, kHeadDim);
            FATTN_DTYPE_SWITCH(params.dtype, Element,
                               [&] { sm90::run_backward<kHeadDim, Element>(params, carved, device, stream); });
        });
        return;
    }
    FATTN_HEADDIM_SWITCH(params.head_dim, kHeadDim, [&] {
        const BackwardWorkspace carved = BackwardWorkspace::carve(workspace, params, kHeadDim);
        FATTN_DTYPE_SWITCH(params.dtype, Element,
                           [&] { run_backward<kHeadDim, Element>(params, carved, device, stream); });
    });
}

}  // namespace fattn::cuda
