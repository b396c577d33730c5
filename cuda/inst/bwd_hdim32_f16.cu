// The backward kernels for head-dim tile width 32, f16 storage (see bwd_kernel.cuh).
#include "bwd_kernel.cuh"

namespace fattn::cuda {
template void run_backward<32, __half>(const AttnBwdParams&, const BackwardWorkspace&, const cudaDeviceProp&,
                                      cudaStream_t);
}  // namespace fattn::cuda
