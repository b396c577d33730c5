// Host side of the Hopper kernels' TMA descriptors (tensor_map.h).
#include "tensor_map.h"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include "error.h"

namespace fattn::cuda::sm90 {
namespace {

// The stride TMA is given for one dimension: its own when it has extent > 1, else any valid one
// (its only coordinate is 0).
int64_t stride_bytes(int64_t stride, int64_t extent, int64_t element_bytes) {
    return extent > 1 ? stride * element_bytes : 16;
}

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 function = [] {
        void* entry = nullptr;
        cudaDriverEntryPointQueryResult found{};
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &entry, 12000, cudaEnableDefault, &found) !=
                cudaSuccess ||
            found != cudaDriverEntryPointSuccess) {
            cudaGetLastError();
            entry = nullptr;
        }
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(entry);
    }();
    return function;
}

}  // namespace

bool tma_readable(const TensorExtent& tensor) {
    const TensorView& view = *tensor.view;
    const auto stride_ok = [](int64_t stride, int64_t extent) {
        const int64_t bytes = stride_bytes(stride, extent, 2);
        return bytes > 0 && bytes % 16 == 0 && bytes < (int64_t{1} << 40);
    };
    return reinterpret_cast<uintptr_t>(view.data) % 16 == 0 && stride_ok(view.row_stride, tensor.rows) &&
           stride_ok(view.head_stride, tensor.heads) && stride_ok(view.batch_stride, tensor.batch) &&
           tensor.rows < INT32_MAX && tensor.heads < INT32_MAX && tensor.batch < INT32_MAX &&
           encoder() != nullptr;
}

CUtensorMap make_tile_map(const TensorExtent& tensor, DType dtype, int box_rows) {
    const TensorView& view = *tensor.view;
    const int64_t element_bytes = dtype == DType::F32 ? 4 : 2;
    const auto stride = [&](int64_t elements, int64_t extent) {
        return static_cast<cuuint64_t>(stride_bytes(elements, extent, element_bytes));
    };
    const cuuint64_t dims[4] = {static_cast<cuuint64_t>(tensor.columns), static_cast<cuuint64_t>(tensor.rows),
                                static_cast<cuuint64_t>(tensor.heads), static_cast<cuuint64_t>(tensor.batch)};
    const cuuint64_t strides[3] = {stride(view.row_stride, tensor.rows), stride(view.head_stride, tensor.heads),
                                   stride(view.batch_stride, tensor.batch)};
    const cuuint32_t box[4] = {static_cast<cuuint32_t>(128 / element_bytes), static_cast<cuuint32_t>(box_rows), 1, 1};
    const CUtensorMapDataType type = dtype == DType::F32    ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32
                                     : dtype == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                            : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    const cuuint32_t element_strides[4] = {1, 1, 1, 1};
    CUtensorMap map{};
    const CUresult status = encoder()(
        &map, type, 4, view.data, dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
        CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (status != CUDA_SUCCESS)
        fail(FATTN_ERROR_BACKEND, "cuTensorMapEncodeTiled refused a tensor of shape [", tensor.batch, ", ",
             tensor.heads, ", ", tensor.rows, ", ", tensor.columns, "] with strides [", view.batch_stride, ", ",
             view.head_stride, ", ", view.row_stride, ", 1]: CUresult ", static_cast<int>(status));
    return map;
}

}  // namespace fattn::cuda::sm90
