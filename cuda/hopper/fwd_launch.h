// The Hopper forward's launcher template, declared for forward.cu's dispatch and defined in
// hopper/fwd_kernel.cuh; one instantiation file per (tile width, dtype) in cuda/inst/fwd_sm90_*.cu.
#pragma once

#include <cuda_runtime.h>

#include "hopper/tensor_map.h"
#include "params.h"

namespace fattn::cuda::sm90 {

// Head-dim tile widths of the Hopper forward (FATTN_SM90_HEADDIM_SWITCH in dispatch.h).
inline constexpr int kMaxForwardHeadDim = 128;

inline TensorExtent query_extent(const AttnParams& params, const TensorView& view) {
    return {&view, params.batch, params.heads_q, params.seqlen_q, params.head_dim};
}

inline TensorExtent key_extent(const AttnParams& params, const TensorView& view) {
    return {&view, params.batch, params.heads_kv, params.seqlen_k, params.head_dim};
}

// Whether the Hopper forward serves this problem; the sm_80 kernels serve every other.
inline bool forward_supported(const AttnParams& params) {
    return params.head_dim <= kMaxForwardHeadDim && tma_readable(query_extent(params, params.q)) &&
           tma_readable(key_extent(params, params.k)) && tma_readable(key_extent(params, params.v)) &&
           tma_readable(query_extent(params, params.o));
}

// Enqueues the forward for head_dim <= kHeadDim (64 or 128) on `stream`; the device must be of
// compute capability 9.0 and forward_supported(params) true. `workspace`: launch.h's forward
// workspace.
template <int kHeadDim, typename Element>
void run_forward(const AttnParams& params, void* workspace, const cudaDeviceProp& device, cudaStream_t stream);

}  // namespace fattn::cuda::sm90
