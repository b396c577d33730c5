// The backward kernels for head-dim tile width 256, bf16 storage (see bwd_kernel.cuh).
#include "bwd_kernel.cuh"

namespace fattn::cuda {
template void run_backward<256, __nv_bfloat16>(const AttnBwdParams&, const BackwardWorkspace&, const cudaDeviceProp&,
                                      cudaStream_t);
}  // namespace fattn::cuda
