// TMA descriptors (CUtensorMap) for the Hopper kernels, encoded on the host per call from a
// validated TensorView. The driver's encoder is reached through the runtime's entry-point query,
// so libfattn links no libcuda.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "params.h"

namespace fattn::cuda::sm90 {

// A [batch, heads, rows, columns] tensor as AttnParams describes it.
struct TensorExtent {
    const TensorView* view;
    int64_t batch;
    int64_t heads;
    int64_t rows;
    int64_t columns;
};

// Whether TMA can read the 16-bit tensor: base 16-byte aligned, every stride of an extent > 1 a positive
// multiple of 16 bytes, row coordinates within int32. Others take the sm_80 kernels.
bool tma_readable(const TensorExtent& tensor);

// A descriptor for boxes of `box_rows` rows x 128 bytes (64 16-bit or 32 fp32 elements), in shared
// memory with the 128-byte swizzle (sm90.cuh); coordinates (column, row, head, batch). For loads
// of 16-bit tensors that tma_readable accepted, and stores or reductions into them or into the
// fp32 workspace. Throws Error(FATTN_ERROR_BACKEND) if the driver refuses the tensor.
CUtensorMap make_tile_map(const TensorExtent& tensor, DType dtype, int box_rows);

}  // namespace fattn::cuda::sm90
