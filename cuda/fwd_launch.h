// The forward launcher template, declared for forward.cu's dispatch and defined in fwd_kernel.cuh.
// Each (tile width, dtype) pair is explicitly instantiated in its own file, cuda/inst/fwd_*.cu,
// so forward.cu compiles no kernel and the kernels build in parallel.
#pragma once

#include <cuda_runtime.h>

#include "params.h"

namespace fattn::cuda {

// Enqueues the forward for head_dim <= kHeadDim (a tile width of dispatch.h) on `stream`.
// Throws Error(FATTN_ERROR_UNSUPPORTED) before any launch when the device cannot run it.
template <int kHeadDim, typename Element>
void run_forward(const AttnParams& params, const cudaDeviceProp& device, cudaStream_t stream);

}  // namespace fattn::cuda
