// The Hopper backward's launcher template, declared for backward.cu's dispatch and defined in
// hopper/bwd_kernel.cuh; one instantiation file per (tile width, dtype) in cuda/inst/bwd_sm90_*.cu.
#pragma once

#include <cuda_runtime.h>

#include "bwd_launch.cuh"
#include "hopper/fwd_launch.h"
#include "hopper/tensor_map.h"
#include "params.h"

namespace fattn::cuda::sm90 {

// Head-dim tile widths of the Hopper backward (FATTN_SM90_HEADDIM_SWITCH in dispatch.h).
inline constexpr int kMaxBackwardHeadDim = 128;

// Whether the Hopper backward serves this problem; the sm_80 kernels serve every other. Every
// tensor must be TMA-readable (q, k, v, dout are copied by TMA; o, dq, dk, dv then have 16-byte
// aligned bases and rows, which the vectorized preprocess, dQ conversion and dK/dV stores use).
// The deterministic mode takes the sm_80 kernels' dQ pass.
inline bool backward_supported(const AttnBwdParams& params) {
    return !params.deterministic && params.head_dim <= kMaxBackwardHeadDim && forward_supported(params) &&
           tma_readable(query_extent(params, params.dout)) && tma_readable(query_extent(params, params.dq)) &&
           tma_readable(key_extent(params, params.dk)) && tma_readable(key_extent(params, params.dv));
}

// Enqueues the whole backward (preprocess, dK/dV/dQ kernel, dQ conversion) for head_dim <=
// kHeadDim (64 or 128) on `stream`; the device must be of compute capability 9.0 and
// backward_supported(params) true. `workspace` is carved for tile width kHeadDim.
template <int kHeadDim, typename Element>
void run_backward(const AttnBwdParams& params, const BackwardWorkspace& workspace, const cudaDeviceProp& device,
                  cudaStream_t stream);

}  // namespace fattn::cuda::sm90
