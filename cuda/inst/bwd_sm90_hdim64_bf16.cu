// Hopper backward kernel for head_dim tile 64, bf16 storage (one instantiation per file: see dispatch.h).
#include "hopper/bwd_kernel.cuh"

template void fattn::cuda::sm90::run_backward<64, __nv_bfloat16>(const fattn::AttnBwdParams&, const fattn::cuda::BackwardWorkspace&,
                                                          const cudaDeviceProp&, cudaStream_t);
