// The backward's launcher template and its device workspace, declared for backward.cu's dispatch
// and defined in bwd_kernel.cuh. Each (tile width, dtype) pair is explicitly instantiated in its
// own file, cuda/inst/bwd_*.cu, so backward.cu compiles no kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "params.h"

namespace fattn::cuda {

// The backward's scratch, carved from the handle's workspace (256-byte aligned):
//   lse_log2  float [batch * heads_q][padded_rows]  lse * log2(e); +inf for rows that see no key
//                                                   and for the padding rows past seqlen_q, so
//                                                   exp2(s - lse_log2) is 0 there
//   delta     float [batch * heads_q][padded_rows]  rowsum(dO * O); 0 for padding rows
//   dq_accum  float [batch * heads_q][seqlen_q][tile width]  fp32 dQ sum (atomics), absent when
//                                                   params.deterministic (dQ has its own pass)
// padded_rows rounds seqlen_q up to kRowPadding, a multiple of every kernel's query tile, so the
// kernels copy whole tiles of lse_log2/delta with no bounds checks.
struct BackwardWorkspace {
    static constexpr int64_t kRowPadding = 128;

    float* lse_log2 = nullptr;
    float* delta = nullptr;
    float* dq_accum = nullptr;
    int64_t padded_rows = 0;

    static int64_t padded_rows_of(const AttnBwdParams& params) {
        return (params.seqlen_q + kRowPadding - 1) / kRowPadding * kRowPadding;
    }
    static int64_t row_stat_floats(const AttnBwdParams& params) {
        return params.batch * params.heads_q * padded_rows_of(params);
    }
    static int64_t dq_accum_floats(const AttnBwdParams& params, int tile_width) {
        return params.deterministic ? 0 : params.batch * params.heads_q * params.seqlen_q * tile_width;
    }
    static std::size_t bytes(const AttnBwdParams& params, int tile_width) {
        return static_cast<std::size_t>(2 * row_stat_floats(params) + dq_accum_floats(params, tile_width)) *
               sizeof(float);
    }
    static BackwardWorkspace carve(void* base, const AttnBwdParams& params, int tile_width) {
        BackwardWorkspace workspace;
        workspace.padded_rows = padded_rows_of(params);
        workspace.lse_log2 = static_cast<float*>(base);
        workspace.delta = workspace.lse_log2 + row_stat_floats(params);
        if (dq_accum_floats(params, tile_width) > 0) workspace.dq_accum = workspace.delta + row_stat_floats(params);
        return workspace;
    }
};

// Enqueues the whole backward (preprocess, dK/dV, dQ) for head_dim <= kHeadDim on `stream`.
// Throws Error(FATTN_ERROR_UNSUPPORTED) before any launch when the device cannot run it.
template <int kHeadDim, typename Element>
void run_backward(const AttnBwdParams& params, const BackwardWorkspace& workspace, const cudaDeviceProp& device,
                  cudaStream_t stream);

}  // namespace fattn::cuda
