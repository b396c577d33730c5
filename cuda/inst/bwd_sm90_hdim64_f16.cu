// Hopper backward kernel for head_dim tile 64, f16 storage (one instantiation per file: see dispatch.h).
#include "hopper/bwd_kernel.cuh"

template void fattn::cuda::sm90::run_backward<64, __half>(const fattn::AttnBwdParams&, const fattn::cuda::BackwardWorkspace&,
                                                          const cudaDeviceProp&, cudaStream_t);
