// The sm_80 backward kernels: FlashAttention-2's backward on tensor cores (mma.sync m16n8k16,
// ldmatrix, cp.async), for every GPU of compute capability 8.0 and newer.
//
// Algorithm (P is recomputed from the forward's lse; nothing O(N^2) is stored):
//   1. backward_preprocess: per query row, delta = rowsum(dO * O) (summed by the mma sequence of
//      dP, so that dP - delta is exactly 0 where O is one value row) and lse_log2 = lse * log2(e)
//      (+inf for rows that see no key, so their P is exp2(-inf) = 0), after a memset that zeroes
//      the fp32 dQ sum.
//   2. backward_dkdv_kernel: one block per (key tile of kBlockN keys, kv head, batch). K_j and V_j
//      stay in shared memory; the block walks every (query head of the kv head's group, query tile
//      of kBlockM rows) that can see the key tile (MaskSpec::query_begin/query_end), Q_i and dO_i
//      streaming through a cp.async pipeline. Per step, in the transposed orientation (rows are
//      keys) so that P^T and dS^T are born in registers as the A operands of dV and dK:
//        S^T  = K_j Q_i^T                P^T = exp2(S^T * scale_log2 - lse_log2)   (only tiles that
//        dP^T = V_j dO_i^T               dS^T = P^T * (dP^T - delta)                 straddle a mask
//        dV_j += P^T dO_i                dK_j += dS^T Q_i                            bound pay for it)
//        dQ_i += dS K_j                  (fp32 atomics into dq_accum)
//      Non-finite inputs reach exactly the gradients that read them: masked P/dS elements are set
//      to exact zeros (not computed: a NaN lse or delta would make them NaN), and the operands they
//      meet in an mma lose their NaN/Inf (tile::zero_nonfinite: K once per block, Q on masked
//      steps), which the rows that read them no longer need, their lse or delta being NaN.
//      Summing the group's query heads inside one block gives GQA/MQA dK/dV with no atomics and no
//      fp32 dK/dV scratch. At the end dK *= scale and dK, dV are stored.
//   3. without params.deterministic, backward_dq_convert: dq = dq_accum * scale in the storage
//      dtype. With it, the atomics (whose order varies) are skipped and backward_dq_kernel computes
//      dQ in a second pass instead: one block per (query tile, query head, batch) walks its visible
//      key tiles in a fixed order, recomputing S, dP and dS (3 products instead of 1, but
//      bit-identical from run to run).
//
// Warp layout of the dK/dV kernel. The block's keys form kSlabs slabs of kWarpKeys (16 or 32);
// warp (slab, half) computes S^T/dP^T for its slab x query half `half` and owns dK/dV (fp32
// registers, the block's whole life) for its slab x column half `half`. Its P^T/dS^T for its own
// query half feed dV/dK straight from registers; the partner warp's half comes through shared
// memory (P^T, dS^T tiles), which dQ reads as well. Splitting the queries between two warps
// (rather than giving each warp all of them for 16 keys) halves the Q/dO fragment loads per mma
// of S^T and dP^T, and dK+dV stay within 128 registers per thread for every width.
//
// Layouts. Global tensors are any-strided [batch, head, row, head_dim] with a contiguous head_dim
// (TensorView; all index arithmetic in int64). Shared tiles are row-major and padded by 8
// elements (tile.cuh), head_dim zero-filled up to the tile width kHeadDim; columns past head_dim
// are never written. Rows past seqlen_q/seqlen_k are zero-filled too: their P is 0 through
// lse_log2 = +inf (padding query rows) or the mask (padding keys), so nothing leaks from them.
// With an unaligned pointer or stride the copies fall back to element loads (tile.cuh).
//
// Tile sizes (8 warps; shared memory with Q/dO double-buffered, else single-buffered). Larger
// query tiles amortize each step's barriers and K/V fragment loads (measured on H100: D=64 ran
// 258 TFLOP/s with kBlockM = 128 against 222 with 64); the limit is 255 registers per thread.
//   kHeadDim   kBlockN x kBlockM   keys/warp   shared memory (2 / 1 stage)   dQ pass (deterministic)
//   32         128 x 128            32          130 / 109 KB                 64 x 64, 4 warps, 30 KB
//   64         128 x 128            32          178 / 141 KB                 64 x 64, 4 warps, 54 KB
//   96         128 x 64             32          141 / 115 KB                 64 x 64, 4 warps, 78 KB
//   128        128 x 64             32          173 / 139 KB                 64 x 64, 4 warps, 102 KB
//   192        64 x 64              16          169 / 119 KB                 64 x 32, 4 warps, 100 KB
//   256        64 x 32              16          143 / 109 KB                 64 x 32, 4 warps, 132 KB
// Hopper (227 KB per block) runs two stages everywhere; an A100 (163 KB) one stage at widths 64,
// 128 and 192. GPUs with 99 KB per block (RTX 30/40, L4) get FATTN_ERROR_UNSUPPORTED.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "bwd_launch.cuh"
#include "error.h"
#include "launch_config.h"
#include "params.h"
#include "ptx.cuh"
#include "tile.cuh"

namespace fattn::cuda {

template <int kHeadDim_, int kBlockN_, int kBlockM_, int kKeyTilesPerWarp_, int kDqWarpsD_, int kDqBlockN_>
struct BackwardTraitsBase {
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kRow = tile::kPaddedRow<kHeadDim>;

    // dK/dV kernel: warp (slab, half) computes S^T/dP^T for its slab's kWarpKeys keys x query
    // half `half`, and owns dK/dV for those keys x column half `half`.
    static constexpr int kBlockN = kBlockN_;  // keys per block
    static constexpr int kBlockM = kBlockM_;  // query rows per step
    static constexpr int kKeyTiles = kKeyTilesPerWarp_;  // 16-key mma tiles per warp
    static constexpr int kWarpKeys = 16 * kKeyTiles;
    static constexpr int kSlabs = kBlockN / kWarpKeys;
    static constexpr int kWarps = 2 * kSlabs;
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kWarpQueries = kBlockM / 2;
    static constexpr int kWarpCols = kHeadDim / 2;
    static constexpr int kSTiles = kWarpQueries / 8;  // 8-query accumulator tiles of S^T
    static constexpr int kDkvTiles = kWarpCols / 8;   // 8-column accumulator tiles of dK/dV
    // The block's dQ_i += dS K_j product: warps tile the kBlockM x kHeadDim output as squarely
    // as 16-column steps allow (fewest fragment loads per mma).
    static constexpr int kDqWarpsD = kDqWarpsD_;
    static constexpr int kDqWarpsM = kWarps / kDqWarpsD;
    static constexpr int kDqMTiles = kBlockM / 16 / kDqWarpsM;
    static constexpr int kDqWarpCols = kHeadDim / kDqWarpsD;
    static constexpr int kDqTiles = kDqWarpCols / 8;
    static constexpr int kPRow = tile::kPaddedRow<kBlockM>;  // rows of the P^T and dS^T tiles
    static constexpr int kKVElements = kBlockN * kRow;
    static constexpr int kQElements = kBlockM * kRow;
    static constexpr int kPElements = kBlockN * kPRow;
    // Q/dO (with lse_log2/delta) are double-buffered when shared memory allows (Hopper); with one
    // stage (A100 at the widest tiles) the next step's copy waits for the end of the step.
    static constexpr int shared_bytes(int stages) {
        return 2 * (2 * kKVElements + 2 * stages * kQElements + 2 * kPElements) + 4 * 2 * stages * kBlockM;
    }

    // Deterministic dQ kernel: 4 warps of 16 query rows, kDqBlockN keys per step.
    static constexpr int kDqWarps = 4;
    static constexpr int kDqThreads = kDqWarps * 32;
    static constexpr int kDqBlockM = 16 * kDqWarps;
    static constexpr int kDqBlockN = kDqBlockN_;
    static constexpr int kDqStages = 2;  // K/V double-buffered
    static constexpr int kDqSharedBytes = 2 * (2 * kDqBlockM * kRow + 2 * kDqStages * kDqBlockN * kRow);

    static_assert(kWarpCols % 16 == 0 && kWarpQueries % 16 == 0 && kDqWarpCols % 16 == 0, "16-wide mma steps");
    static_assert(kWarps % kDqWarpsD == 0 && kBlockM % (16 * kDqWarpsM) == 0, "dQ warp grid tiles the block");
    static_assert(BackwardWorkspace::kRowPadding % kBlockM == 0 && BackwardWorkspace::kRowPadding % kDqBlockM == 0,
                  "query tiles divide the workspace's row padding");
    static_assert(kBlockM / 2 <= kThreads && kDqBlockN % 16 == 0, "one thread per 16-byte chunk of lse_log2/delta");
};

template <int kHeadDim>
struct BackwardTraits;
//                                                        kHeadDim kBlockN kBlockM key-tiles/warp dQ-warpsD dQ-kBlockN
template <> struct BackwardTraits<32> : BackwardTraitsBase<32, 128, 128, 2, 2, 64> {};
template <> struct BackwardTraits<64> : BackwardTraitsBase<64, 128, 128, 2, 2, 64> {};
template <> struct BackwardTraits<96> : BackwardTraitsBase<96, 128, 64, 2, 2, 64> {};
template <> struct BackwardTraits<128> : BackwardTraitsBase<128, 128, 64, 2, 4, 64> {};
template <> struct BackwardTraits<192> : BackwardTraitsBase<192, 64, 64, 1, 4, 32> {};
template <> struct BackwardTraits<256> : BackwardTraitsBase<256, 64, 32, 1, 8, 32> {};

namespace backward_detail {

// Per-lane element offsets of the ldmatrix.x4 row addresses for the 16x16 block at the origin of a
// padded row-major tile whose rows hold kRow elements (fragment layouts: PTX ISA, mma.m16n8k16).
// rows_first: matrices (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15): plain, the
//   A operand of a [m][k] tile; .trans, the B operands of two 8-column tiles of a [k][n] tile.
// cols_first: matrices (rows 0-7, cols 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15): plain, the
//   B operands of two 8-row tiles of an [n][k] tile; .trans, the A operand of a [k][m] tile.
template <int kRow>
__device__ __forceinline__ int rows_first_offset(int lane) {
    return (lane % 16) * kRow + (lane / 16) * 8;
}
template <int kRow>
__device__ __forceinline__ int cols_first_offset(int lane) {
    return ((lane / 16) * 8 + lane % 8) * kRow + ((lane / 8) % 2) * 8;
}

template <int kTiles>
__device__ __forceinline__ void zero(float (&accumulators)[kTiles][4]) {
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) accumulators[t][e] = 0.0f;
}

// The keys [first, end) that query row `row` sees, relative to the tile's first key `key0` and
// clamped to [0, kTileKeys] (so they fit an int). Keys past seqlen_k are never visible.
template <int kTileKeys>
__device__ __forceinline__ int2 visible_keys(const MaskSpec& mask, int64_t row, int64_t key0) {
    const int64_t first = mask.key_begin(row) - key0;
    const int64_t end = mask.key_end(row) - key0;
    return make_int2(static_cast<int>(first < 0 ? 0 : (first > kTileKeys ? kTileKeys : first)),
                     static_cast<int>(end < 0 ? 0 : (end > kTileKeys ? kTileKeys : end)));
}

// P = exp2(S * scale_log2 - lse_log2) and dS = P * (dP - delta), in place, for one element. A
// row with lse_log2 = +inf (no visible key, or padding) gets P = 0 and dS = 0; masked elements
// are set to 0 afterwards (zero_masked), since a NaN lse or delta would make them NaN here.
__device__ __forceinline__ void probability_and_gradient(float& s_to_p, float& dp_to_ds, float lse_log2,
                                                         float delta, float scale_log2) {
    const float p = ptx::exp2_approx(fmaf(s_to_p, scale_log2, -lse_log2));
    s_to_p = p;
    dp_to_ds = p * (dp_to_ds - delta);
}

// P = 0 and dS = 0, exactly, for a masked element (after probability_and_gradient): its row's
// lse_log2 or delta may be NaN (a row that reads a NaN), and its key must not see it.
__device__ __forceinline__ void zero_masked(float& p, float& ds) {
    p = 0.0f;
    ds = 0.0f;
}

__device__ __forceinline__ void atomic_add_pair(float* address, float first, float second) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2*>(address), make_float2(first, second));  // one 8-byte reduction
#else
    atomicAdd(address, first);
    atomicAdd(address + 1, second);
#endif
}

}  // namespace backward_detail

inline constexpr int kRowKernelThreads = 256;

// backward_preprocess: 16 query rows per warp (one mma row tile), and as many warps as keep the
// block's O and dO tiles within 48 KB of static shared memory.
template <int kHeadDim>
struct PreprocessTiling {
    static constexpr int kWarps = kHeadDim <= 128 ? 4 : 2;
    static constexpr int kThreads = 32 * kWarps;
    static constexpr int kRows = 16 * kWarps;
    static_assert(BackwardWorkspace::kRowPadding % kRows == 0, "a block's rows lie in one head");
};

// Per query row: delta = rowsum(dO * O), lse_log2 = lse * log2(e) (+inf for a row that sees no
// key, and for padding rows). The caller zeroes the fp32 dQ sum. Warp w of the block owns 16 rows.
// delta is summed by the same mma.m16n8k16 sequence (k ascending from a zero accumulator) that
// forms dP = dO . V in the dK/dV and dQ kernels: where a row's O equals one value row V_j (a
// one-hot softmax: large scores, a single visible key), dP - delta is then exactly 0 for key j,
// as in exact arithmetic, instead of a rounding difference of |dO||V| * 2^-23 that dK = dS Q and
// dQ = dS K multiply further (by ~1e17 for bf16 inputs of that size, overflowing fp32). The
// product O_i . dO_i is the diagonal of the 16x16 block O dO^T of the warp's rows: its two
// 16x8 halves are computed, each thread keeps the diagonal elements it holds. O and dO reach the
// mma operands through shared memory (16-byte copies of whole rows, then ldmatrix): loaded
// straight into the operand layout, each load would be 4 bytes of a row.
template <int kHeadDim, typename Element>
__global__ void __launch_bounds__(PreprocessTiling<kHeadDim>::kThreads)
    backward_preprocess(const __grid_constant__ AttnBwdParams params, const BackwardWorkspace workspace,
                        bool vectorized) {
    using Tiling = PreprocessTiling<kHeadDim>;
    constexpr float kLog2e = 1.4426950408889634f;
    constexpr int kRow = tile::kPaddedRow<kHeadDim>;
    __shared__ __align__(16) Element smem_o[Tiling::kRows * kRow];
    __shared__ __align__(16) Element smem_dout[Tiling::kRows * kRow];
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    // slot = (batch * heads_q + head) * padded_rows + row
    const int64_t block_slot0 = static_cast<int64_t>(blockIdx.x) * Tiling::kRows;
    const int64_t head_row = block_slot0 / workspace.padded_rows;
    const int64_t block_row0 = block_slot0 - head_row * workspace.padded_rows;
    const int64_t batch = head_row / params.heads_q;
    const int64_t head = head_row - batch * params.heads_q;

    // Rows past seqlen_q and columns past head_dim are zeros.
    const int valid_rows = static_cast<int>(std::clamp<int64_t>(params.seqlen_q - block_row0, 0, Tiling::kRows));
    const int head_dim = static_cast<int>(params.head_dim);
    const auto load = [&](Element* smem, const TensorView& view) {
        tile::load_tile<Tiling::kRows, kHeadDim, Tiling::kThreads>(
            smem, static_cast<const Element*>(view.data) + view.offset(batch, head, valid_rows > 0 ? block_row0 : 0),
            view.row_stride, valid_rows, head_dim, vectorized);
    };
    load(smem_o, params.o);
    load(smem_dout, params.dout);
    ptx::cp_async_commit();
    ptx::cp_async_wait<0>();
    __syncthreads();

    // ldmatrix.x4 of the warp's 16 rows x 16 columns at k step kk: lane l addresses row l % 16,
    // column half l / 16. For O that is the A operand (rows g, g + 8 x columns 2t, 2t + 8); for dO,
    // registers 0 and 2 are the B operand of its rows 0-7, 1 and 3 that of rows 8-15.
    const uint32_t lane_offset = ((warp * 16 + lane % 16) * kRow + (lane / 16) * 8) * sizeof(Element);
    const uint32_t o_base = ptx::smem_address(smem_o) + lane_offset;
    const uint32_t dout_base = ptx::smem_address(smem_dout) + lane_offset;
    float low[4] = {0.0f, 0.0f, 0.0f, 0.0f};   // O rows x dO rows 0-7 of the warp
    float high[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // O rows x dO rows 8-15
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
        uint32_t o_frag[4];
        uint32_t dout_frag[4];
        ptx::ldmatrix_x4(o_frag, o_base + kk * 16 * sizeof(Element));
        ptx::ldmatrix_x4(dout_frag, dout_base + kk * 16 * sizeof(Element));
        const uint32_t dout_low[2] = {dout_frag[0], dout_frag[2]};
        const uint32_t dout_high[2] = {dout_frag[1], dout_frag[3]};
        ptx::mma_m16n8k16<Element>(low, o_frag, dout_low);
        ptx::mma_m16n8k16<Element>(high, o_frag, dout_high);
    }
    // Thread (g, t) holds block elements (g, 2t), (g, 2t + 1) of `low` and (g + 8, 2t), (g + 8,
    // 2t + 1) of `high`: the diagonal of rows g and g + 8 where 2t or 2t + 1 is g.
    const int64_t slot0 = block_slot0 + warp * 16;
    const int g = lane / 4;
    if (lane % 4 == g / 2) {  // (selected without a dynamic index, which would go through local memory)
        workspace.delta[slot0 + g] = g % 2 == 0 ? low[0] : low[1];
        workspace.delta[slot0 + g + 8] = g % 2 == 0 ? high[2] : high[3];
    }
    if (lane < 16) {
        const int64_t row = block_row0 + warp * 16 + lane;
        float lse_log2 = INFINITY;
        if (row < params.seqlen_q) {
            const float lse = static_cast<const float*>(params.lse.data)[params.lse.offset(batch, head, row)];
            if (lse != -INFINITY) lse_log2 = lse * kLog2e;
        }
        workspace.lse_log2[slot0 + lane] = lse_log2;
    }
}

template <class Traits, typename Element>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    backward_dkdv_kernel(const __grid_constant__ AttnBwdParams params, const BackwardWorkspace workspace,
                         bool vectorized, int stages) {
    using namespace backward_detail;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kKeyTiles = Traits::kKeyTiles;
    constexpr int kSTiles = Traits::kSTiles;
    constexpr int kRow = Traits::kRow;
    constexpr int kPRow = Traits::kPRow;
    constexpr uint32_t kElementBytes = sizeof(Element);
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    Element* smem_k = reinterpret_cast<Element*>(shared_bytes);
    Element* smem_v = smem_k + Traits::kKVElements;
    Element* smem_q = smem_v + Traits::kKVElements;             // [stages][kBlockM][kRow]
    Element* smem_dout = smem_q + stages * Traits::kQElements;  // [stages][kBlockM][kRow]
    Element* smem_p = smem_dout + stages * Traits::kQElements;  // P^T: [kBlockN][kPRow]
    Element* smem_ds = smem_p + Traits::kPElements;             // dS^T: [kBlockN][kPRow]
    float* smem_lse = reinterpret_cast<float*>(smem_ds + Traits::kPElements);  // [stages][kBlockM]
    float* smem_delta = smem_lse + stages * kBlockM;                           // [stages][kBlockM]

    // Key tiles fastest: a head's blocks run together and share its Q/dO in L2; under a causal
    // mask the first key tiles see the most query rows and start first.
    const int64_t key_tiles = (params.seqlen_k + kBlockN - 1) / kBlockN;
    const int64_t block = blockIdx.x;
    const int64_t key_tile = block % key_tiles;
    const int64_t kv_head = (block / key_tiles) % params.heads_kv;
    const int64_t batch = block / key_tiles / params.heads_kv;
    const int64_t key0 = key_tile * kBlockN;
    const int keys = static_cast<int>(std::min<int64_t>(kBlockN, params.seqlen_k - key0));
    const int head_dim = static_cast<int>(params.head_dim);
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int half = warp / Traits::kSlabs;  // which query half of S^T and column half of dK/dV
    const int warp_key0 = (warp % Traits::kSlabs) * Traits::kWarpKeys;
    const int warp_query0 = half * Traits::kWarpQueries;
    const int warp_col0 = half * Traits::kWarpCols;

    // Steps: every (query head of the group, query tile) whose rows can see one of these keys.
    const MaskSpec& mask = params.mask;
    const tile::TileRange query_tiles = tile::visible_query_tiles<kBlockM>(mask, key0, keys);
    const int64_t steps = query_tiles.count * params.heads_per_kv;
    // A step is (query head, first query row); steps advance query tile fastest, without divisions.
    struct Step {
        int64_t head;
        int64_t row0;
    };
    const int64_t first_row = query_tiles.first * kBlockM;
    const int64_t end_row = (query_tiles.first + query_tiles.count) * kBlockM;
    const auto next_step = [&](Step step) {
        step.row0 += kBlockM;
        if (step.row0 == end_row) {
            step.row0 = first_row;
            ++step.head;
        }
        return step;
    };

    const auto load_step = [&](Step step, int stage) {
        const int64_t head = step.head;
        const int64_t row0 = step.row0;
        const int rows = static_cast<int>(std::min<int64_t>(kBlockM, params.seqlen_q - row0));
        tile::load_tile<kBlockM, kHeadDim, Traits::kThreads>(
            smem_q + stage * Traits::kQElements,
            static_cast<const Element*>(params.q.data) + params.q.offset(batch, head, row0), params.q.row_stride,
            rows, head_dim, vectorized);
        tile::load_tile<kBlockM, kHeadDim, Traits::kThreads>(
            smem_dout + stage * Traits::kQElements,
            static_cast<const Element*>(params.dout.data) + params.dout.offset(batch, head, row0),
            params.dout.row_stride, rows, head_dim, vectorized);
        const int64_t stats = (batch * params.heads_q + head) * workspace.padded_rows + row0;
        constexpr int kStatChunks = kBlockM / 4;
        if (threadIdx.x < kStatChunks) {
            ptx::cp_async_16(ptx::smem_address(smem_lse + stage * kBlockM + threadIdx.x * 4),
                             workspace.lse_log2 + stats + threadIdx.x * 4, true);
        } else if (threadIdx.x < 2 * kStatChunks) {
            const int chunk = threadIdx.x - kStatChunks;
            ptx::cp_async_16(ptx::smem_address(smem_delta + stage * kBlockM + chunk * 4),
                             workspace.delta + stats + chunk * 4, true);
        }
    };

    float dk[kKeyTiles][Traits::kDkvTiles][4];
    float dv[kKeyTiles][Traits::kDkvTiles][4];
#pragma unroll
    for (int mt = 0; mt < kKeyTiles; ++mt) {
        zero(dk[mt]);
        zero(dv[mt]);
    }

    if (steps > 0) {
        tile::load_tile<kBlockN, kHeadDim, Traits::kThreads>(
            smem_k, static_cast<const Element*>(params.k.data) + params.k.offset(batch, kv_head, key0),
            params.k.row_stride, keys, head_dim, vectorized);
        tile::load_tile<kBlockN, kHeadDim, Traits::kThreads>(
            smem_v, static_cast<const Element*>(params.v.data) + params.v.offset(batch, kv_head, key0),
            params.v.row_stride, keys, head_dim, vectorized);
        load_step(Step{kv_head * params.heads_per_kv, first_row}, 0);
    }
    ptx::cp_async_commit();
    if (steps > 0) {
        // K without NaN/Inf for dQ += dS K, where masked (zero) dS elements meet every key; S^T
        // needs no poisoned key either, as the rows that read one have a NaN lse (tile.cuh).
        ptx::cp_async_wait<0>();
        __syncthreads();
        tile::zero_nonfinite<kBlockN, kHeadDim, Traits::kThreads>(smem_k, threadIdx.x);
    }

    // Per-lane ldmatrix addresses. S^T/dP^T: K/V rows are A (plain), Q/dO rows B (plain).
    // dV/dK: P^T/dS^T rows are A (plain, for the partner warp's query half), dO/Q B (.trans).
    // dQ: dS^T is A (.trans), K is B (.trans).
    const uint32_t k_a = ptx::smem_address(smem_k + warp_key0 * kRow + rows_first_offset<kRow>(lane));
    const uint32_t v_a = ptx::smem_address(smem_v + warp_key0 * kRow + rows_first_offset<kRow>(lane));
    const uint32_t q_b = ptx::smem_address(smem_q + warp_query0 * kRow + cols_first_offset<kRow>(lane));
    const uint32_t dout_b = ptx::smem_address(smem_dout + warp_query0 * kRow + cols_first_offset<kRow>(lane));
    const uint32_t p_a = ptx::smem_address(smem_p + warp_key0 * kPRow + rows_first_offset<kPRow>(lane));
    const uint32_t ds_a = ptx::smem_address(smem_ds + warp_key0 * kPRow + rows_first_offset<kPRow>(lane));
    const uint32_t q_bt = ptx::smem_address(smem_q + warp_col0 + rows_first_offset<kRow>(lane));
    const uint32_t dout_bt = ptx::smem_address(smem_dout + warp_col0 + rows_first_offset<kRow>(lane));
    const int dq_row0 = (warp % Traits::kDqWarpsM) * Traits::kDqMTiles * 16;
    const int dq_col0 = (warp / Traits::kDqWarpsM) * Traits::kDqWarpCols;
    const uint32_t ds_at = ptx::smem_address(smem_ds + dq_row0 + cols_first_offset<kPRow>(lane));
    const uint32_t k_bt = ptx::smem_address(smem_k + dq_col0 + rows_first_offset<kRow>(lane));
    constexpr uint32_t kStageBytes = Traits::kQElements * kElementBytes;
    const bool accumulate_dq = workspace.dq_accum != nullptr;

    Step current{kv_head * params.heads_per_kv, first_row};
    for (int64_t step = 0; step < steps; ++step) {
        const int stage = stages == 2 ? static_cast<int>(step % 2) : 0;
        const Step next = next_step(current);
        ptx::cp_async_wait<0>();
        __syncthreads();  // this step's Q/dO/lse/delta visible; every warp done with the last step
        if (stages == 2 && step + 1 < steps) load_step(next, stage ^ 1);
        ptx::cp_async_commit();
        const int64_t row0 = current.row0;
        const int rows = static_cast<int>(std::min<int64_t>(kBlockM, params.seqlen_q - row0));
        const bool masked_step = !mask.tile_fully_visible(row0, row0 + rows, key0, key0 + kBlockN);
        if (masked_step) {  // Q without NaN/Inf for dK += dS^T Q, where masked dS elements meet it
            tile::zero_nonfinite<kBlockM, kHeadDim, Traits::kThreads>(smem_q + stage * Traits::kQElements,
                                                                      threadIdx.x);
            __syncthreads();
        }

        // S^T = K Q^T and dP^T = V dO^T: this warp's kWarpKeys keys x kWarpQueries query rows.
        float s[kKeyTiles][kSTiles][4];
        float dp[kKeyTiles][kSTiles][4];
#pragma unroll
        for (int mt = 0; mt < kKeyTiles; ++mt) {
            zero(s[mt]);
            zero(dp[mt]);
        }
        const uint32_t stage_offset = stage * kStageBytes;
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk) {
            uint32_t k_frag[kKeyTiles][4];
            uint32_t v_frag[kKeyTiles][4];
#pragma unroll
            for (int mt = 0; mt < kKeyTiles; ++mt) {
                ptx::ldmatrix_x4(k_frag[mt], k_a + (mt * 16 * kRow + kk * 16) * kElementBytes);
                ptx::ldmatrix_x4(v_frag[mt], v_a + (mt * 16 * kRow + kk * 16) * kElementBytes);
            }
#pragma unroll
            for (int np = 0; np < kSTiles / 2; ++np) {
                const uint32_t offset = stage_offset + (np * 16 * kRow + kk * 16) * kElementBytes;
                uint32_t q_frag[4];
                uint32_t dout_frag[4];
                ptx::ldmatrix_x4(q_frag, q_b + offset);
                ptx::ldmatrix_x4(dout_frag, dout_b + offset);
#pragma unroll
                for (int mt = 0; mt < kKeyTiles; ++mt) {
                    ptx::mma_pair<Element>(s[mt][2 * np], s[mt][2 * np + 1], k_frag[mt], q_frag);
                    ptx::mma_pair<Element>(dp[mt][2 * np], dp[mt][2 * np + 1], v_frag[mt], dout_frag);
                }
            }
        }

        // Element (key g [+8], query 2t [+1]) of each 16x8 tile: P^T and dS^T in place, then zero
        // where masked (straddling tiles only), published to shared memory for the partner warp
        // and for dQ.
        const float* lse_log2 = smem_lse + stage * kBlockM + warp_query0;
        const float* delta = smem_delta + stage * kBlockM + warp_query0;
#pragma unroll
        for (int t = 0; t < kSTiles; ++t) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int query = t * 8 + (lane % 4) * 2 + e;
                const float row_lse_log2 = lse_log2[query];
                const float row_delta = delta[query];
#pragma unroll
                for (int mt = 0; mt < kKeyTiles; ++mt)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
                        probability_and_gradient(s[mt][t][h * 2 + e], dp[mt][t][h * 2 + e], row_lse_log2, row_delta,
                                                 params.scale_log2);
            }
        }
        if (masked_step) {
#pragma unroll
            for (int t = 0; t < kSTiles; ++t) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int2 range =
                        visible_keys<kBlockN>(mask, row0 + warp_query0 + t * 8 + (lane % 4) * 2 + e, key0);
#pragma unroll
                    for (int mt = 0; mt < kKeyTiles; ++mt) {
#pragma unroll
                        for (int h = 0; h < 2; ++h) {
                            const int key = warp_key0 + mt * 16 + lane / 4 + h * 8;
                            if (key < range.x || key >= range.y) zero_masked(s[mt][t][h * 2 + e], dp[mt][t][h * 2 + e]);
                        }
                    }
                }
            }
        }
        // Packed to the storage dtype once: two queries per register, [key tile][query tile][row g / g+8].
        uint32_t p_packed[kKeyTiles][kSTiles][2];
        uint32_t ds_packed[kKeyTiles][kSTiles][2];
#pragma unroll
        for (int mt = 0; mt < kKeyTiles; ++mt) {
#pragma unroll
            for (int t = 0; t < kSTiles; ++t) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    p_packed[mt][t][h] = ptx::pack2<Element>(s[mt][t][h * 2], s[mt][t][h * 2 + 1]);
                    ds_packed[mt][t][h] = ptx::pack2<Element>(dp[mt][t][h * 2], dp[mt][t][h * 2 + 1]);
                    const int offset = (warp_key0 + mt * 16 + lane / 4 + h * 8) * kPRow + warp_query0 + t * 8 +
                                       (lane % 4) * 2;
                    *reinterpret_cast<uint32_t*>(smem_p + offset) = p_packed[mt][t][h];
                    *reinterpret_cast<uint32_t*>(smem_ds + offset) = ds_packed[mt][t][h];
                }
            }
        }
        __syncthreads();  // P^T and dS^T complete

        // dV += P^T dO and dK += dS^T Q over this warp's keys and column half: the own query half's
        // A operands come from registers, the partner's from shared memory.
        const auto accumulate_dkdv = [&](int query_step, const uint32_t(&p_frag)[kKeyTiles][4],
                                         const uint32_t(&ds_frag)[kKeyTiles][4]) {
#pragma unroll
            for (int cp = 0; cp < Traits::kDkvTiles / 2; ++cp) {
                const uint32_t offset = stage_offset + (query_step * 16 * kRow + cp * 16) * kElementBytes;
                uint32_t dout_frag[4];
                uint32_t q_frag[4];
                ptx::ldmatrix_x4_trans(dout_frag, dout_bt + offset);
                ptx::ldmatrix_x4_trans(q_frag, q_bt + offset);
#pragma unroll
                for (int mt = 0; mt < kKeyTiles; ++mt) {
                    ptx::mma_pair<Element>(dv[mt][2 * cp], dv[mt][2 * cp + 1], p_frag[mt], dout_frag);
                    ptx::mma_pair<Element>(dk[mt][2 * cp], dk[mt][2 * cp + 1], ds_frag[mt], q_frag);
                }
            }
        };
        constexpr int kHalfSteps = Traits::kWarpQueries / 16;
#pragma unroll
        for (int j = 0; j < kHalfSteps; ++j) {
            uint32_t p_frag[kKeyTiles][4];
            uint32_t ds_frag[kKeyTiles][4];
#pragma unroll
            for (int mt = 0; mt < kKeyTiles; ++mt) {  // the A layout of two adjacent accumulator tiles
                p_frag[mt][0] = p_packed[mt][2 * j][0];
                p_frag[mt][1] = p_packed[mt][2 * j][1];
                p_frag[mt][2] = p_packed[mt][2 * j + 1][0];
                p_frag[mt][3] = p_packed[mt][2 * j + 1][1];
                ds_frag[mt][0] = ds_packed[mt][2 * j][0];
                ds_frag[mt][1] = ds_packed[mt][2 * j][1];
                ds_frag[mt][2] = ds_packed[mt][2 * j + 1][0];
                ds_frag[mt][3] = ds_packed[mt][2 * j + 1][1];
            }
            accumulate_dkdv(half * kHalfSteps + j, p_frag, ds_frag);
        }
#pragma unroll
        for (int j = 0; j < kHalfSteps; ++j) {
            const int query_step = (1 - half) * kHalfSteps + j;
            uint32_t p_frag[kKeyTiles][4];
            uint32_t ds_frag[kKeyTiles][4];
#pragma unroll
            for (int mt = 0; mt < kKeyTiles; ++mt) {
                const uint32_t offset = (mt * 16 * kPRow + query_step * 16) * kElementBytes;
                ptx::ldmatrix_x4(p_frag[mt], p_a + offset);
                ptx::ldmatrix_x4(ds_frag[mt], ds_a + offset);
            }
            accumulate_dkdv(query_step, p_frag, ds_frag);
        }

        if (accumulate_dq) {
            float dq[Traits::kDqMTiles][Traits::kDqTiles][4];
#pragma unroll
            for (int mt = 0; mt < Traits::kDqMTiles; ++mt) zero(dq[mt]);
#pragma unroll
            for (int kk = 0; kk < kBlockN / 16; ++kk) {
                uint32_t ds_frag[Traits::kDqMTiles][4];
#pragma unroll
                for (int mt = 0; mt < Traits::kDqMTiles; ++mt)
                    ptx::ldmatrix_x4_trans(ds_frag[mt], ds_at + (kk * 16 * kPRow + mt * 16) * kElementBytes);
#pragma unroll
                for (int cp = 0; cp < Traits::kDqTiles / 2; ++cp) {
                    uint32_t k_frag[4];
                    ptx::ldmatrix_x4_trans(k_frag, k_bt + (kk * 16 * kRow + cp * 16) * kElementBytes);
#pragma unroll
                    for (int mt = 0; mt < Traits::kDqMTiles; ++mt)
                        ptx::mma_pair<Element>(dq[mt][2 * cp], dq[mt][2 * cp + 1], ds_frag[mt], k_frag);
                }
            }
            float* accum = workspace.dq_accum + ((batch * params.heads_q + current.head) * params.seqlen_q + row0) *
                                                    kHeadDim;
#pragma unroll
            for (int mt = 0; mt < Traits::kDqMTiles; ++mt) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int row = dq_row0 + mt * 16 + lane / 4 + h * 8;
                    if (row >= rows) continue;
#pragma unroll
                    for (int t = 0; t < Traits::kDqTiles; ++t)
                        atomic_add_pair(accum + row * kHeadDim + dq_col0 + t * 8 + (lane % 4) * 2, dq[mt][t][h * 2],
                                        dq[mt][t][h * 2 + 1]);
                }
            }
        }
        if (stages == 1 && step + 1 < steps) {
            __syncthreads();  // every warp done with the single Q/dO stage
            load_step(next, 0);
            ptx::cp_async_commit();
        }
        current = next;
    }
    ptx::cp_async_wait<0>();
    __syncthreads();  // K/V no longer read: they become the staging tiles of dK/dV

#pragma unroll
    for (int mt = 0; mt < kKeyTiles; ++mt) {
#pragma unroll
        for (int t = 0; t < Traits::kDkvTiles; ++t) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int offset = (warp_key0 + mt * 16 + lane / 4 + h * 8) * kRow + warp_col0 + t * 8 + (lane % 4) * 2;
                *reinterpret_cast<uint32_t*>(smem_k + offset) =
                    ptx::pack2<Element>(dk[mt][t][h * 2] * params.scale, dk[mt][t][h * 2 + 1] * params.scale);
                *reinterpret_cast<uint32_t*>(smem_v + offset) =
                    ptx::pack2<Element>(dv[mt][t][h * 2], dv[mt][t][h * 2 + 1]);
            }
        }
    }
    __syncthreads();
    tile::store_tile<kBlockN, kHeadDim, Traits::kThreads>(
        static_cast<Element*>(params.dk.data) + params.dk.offset(batch, kv_head, key0), smem_k, params.dk.row_stride,
        keys, head_dim, vectorized, threadIdx.x);
    tile::store_tile<kBlockN, kHeadDim, Traits::kThreads>(
        static_cast<Element*>(params.dv.data) + params.dv.offset(batch, kv_head, key0), smem_v, params.dv.row_stride,
        keys, head_dim, vectorized, threadIdx.x);
}

// dq = dq_accum * scale in the storage dtype; one thread per 8 columns of a row.
template <int kHeadDim, typename Element>
__global__ void __launch_bounds__(kRowKernelThreads)
    backward_dq_convert(const __grid_constant__ AttnBwdParams params, const BackwardWorkspace workspace,
                        bool vectorized) {
    constexpr int kChunksPerRow = kHeadDim / tile::kChunk;
    const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kRowKernelThreads + threadIdx.x;
    const int64_t head_row = chunk / kChunksPerRow;  // (batch * heads_q + head) * seqlen_q + row
    const int column = static_cast<int>(chunk - head_row * kChunksPerRow) * tile::kChunk;
    const int64_t row = head_row % params.seqlen_q;
    const int64_t batch_head = head_row / params.seqlen_q;
    const int64_t batch = batch_head / params.heads_q;
    if (batch >= params.batch || column >= params.head_dim) return;
    const int64_t head = batch_head - batch * params.heads_q;

    const float4* accum = reinterpret_cast<const float4*>(workspace.dq_accum + head_row * kHeadDim + column);
    const float4 low = accum[0];
    const float4 high = accum[1];
    const float scale = params.scale;
    alignas(16) Element chunk_out[tile::kChunk];
    const uint32_t packed[4] = {ptx::pack2<Element>(low.x * scale, low.y * scale),
                                ptx::pack2<Element>(low.z * scale, low.w * scale),
                                ptx::pack2<Element>(high.x * scale, high.y * scale),
                                ptx::pack2<Element>(high.z * scale, high.w * scale)};
    *reinterpret_cast<uint4*>(chunk_out) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    Element* dq = static_cast<Element*>(params.dq.data) + params.dq.offset(batch, head, row) + column;
    if (vectorized) {
        *reinterpret_cast<uint4*>(dq) = *reinterpret_cast<const uint4*>(chunk_out);
    } else {
#pragma unroll
        for (int e = 0; e < tile::kChunk; ++e) dq[e] = chunk_out[e];
    }
}

// Deterministic dQ: one block per (query tile, query head, batch); warp w owns query rows
// [16w, 16w + 16). Per visible key tile (two-stage cp.async pipeline, fixed order):
//   S = Q K^T, dP = dO V^T, P and dS as in the dK/dV kernel (rows are queries here), dQ += dS K.
template <class Traits, typename Element>
__global__ void __launch_bounds__(Traits::kDqThreads)
    backward_dq_kernel(const __grid_constant__ AttnBwdParams params, const BackwardWorkspace workspace,
                       bool vectorized) {
    using namespace backward_detail;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kBlockM = Traits::kDqBlockM;
    constexpr int kBlockN = Traits::kDqBlockN;
    constexpr int kRow = Traits::kRow;
    constexpr int kSTiles = kBlockN / 8;
    constexpr int kOTiles = kHeadDim / 8;
    constexpr int kKVElements = kBlockN * kRow;
    constexpr uint32_t kElementBytes = sizeof(Element);
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    Element* smem_q = reinterpret_cast<Element*>(shared_bytes);
    Element* smem_dout = smem_q + kBlockM * kRow;
    Element* smem_k = smem_dout + kBlockM * kRow;             // [kDqStages][kBlockN][kRow]
    Element* smem_v = smem_k + Traits::kDqStages * kKVElements;  // [kDqStages][kBlockN][kRow]

    const tile::QueryTileBlock work = tile::query_tile_block<kBlockM, kBlockN>(params, blockIdx.x);
    const int head_dim = static_cast<int>(params.head_dim);
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const MaskSpec& mask = params.mask;

    const Element* k = static_cast<const Element*>(params.k.data) + params.k.offset(work.batch, work.kv_head, 0);
    const Element* v = static_cast<const Element*>(params.v.data) + params.v.offset(work.batch, work.kv_head, 0);
    const auto load_keys_values = [&](int64_t key_tile, int stage) {
        const int64_t key0 = key_tile * kBlockN;
        const int valid = static_cast<int>(std::min<int64_t>(kBlockN, params.seqlen_k - key0));
        tile::load_tile<kBlockN, kHeadDim, Traits::kDqThreads>(smem_k + stage * kKVElements,
                                                               k + key0 * params.k.row_stride, params.k.row_stride,
                                                               valid, head_dim, vectorized);
        tile::load_tile<kBlockN, kHeadDim, Traits::kDqThreads>(smem_v + stage * kKVElements,
                                                               v + key0 * params.v.row_stride, params.v.row_stride,
                                                               valid, head_dim, vectorized);
    };

    tile::load_tile<kBlockM, kHeadDim, Traits::kDqThreads>(
        smem_q, static_cast<const Element*>(params.q.data) + params.q.offset(work.batch, work.head, work.row0),
        params.q.row_stride, work.rows, head_dim, vectorized);
    tile::load_tile<kBlockM, kHeadDim, Traits::kDqThreads>(
        smem_dout, static_cast<const Element*>(params.dout.data) + params.dout.offset(work.batch, work.head, work.row0),
        params.dout.row_stride, work.rows, head_dim, vectorized);
    if (work.key_tiles > 0) load_keys_values(work.first_key_tile, 0);
    ptx::cp_async_commit();

    // This thread's rows g and g + 8 of its warp's 16 (padding rows read lse_log2 = +inf).
    float lse_log2[2];
    float delta[2];
    const int64_t warp_row0 = work.row0 + warp * 16;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int64_t slot =
            (work.batch * params.heads_q + work.head) * workspace.padded_rows + warp_row0 + lane / 4 + half * 8;
        lse_log2[half] = workspace.lse_log2[slot];
        delta[half] = workspace.delta[slot];
    }

    const uint32_t q_a = ptx::smem_address(smem_q + warp * 16 * kRow + rows_first_offset<kRow>(lane));
    const uint32_t dout_a = ptx::smem_address(smem_dout + warp * 16 * kRow + rows_first_offset<kRow>(lane));
    const uint32_t k_b = ptx::smem_address(smem_k + cols_first_offset<kRow>(lane));
    const uint32_t v_b = ptx::smem_address(smem_v + cols_first_offset<kRow>(lane));
    const uint32_t k_bt = ptx::smem_address(smem_k + rows_first_offset<kRow>(lane));
    constexpr uint32_t kStageBytes = kKVElements * kElementBytes;

    float dq[kOTiles][4];
    zero(dq);
    for (int64_t i = 0; i < work.key_tiles; ++i) {
        const int stage = static_cast<int>(i % Traits::kDqStages);
        __syncthreads();  // every warp is done with the other stage (tile i - 1)
        if (i + 1 < work.key_tiles) load_keys_values(work.first_key_tile + i + 1, stage ^ 1);
        ptx::cp_async_commit();
        ptx::cp_async_wait<1>();
        __syncthreads();
        const int64_t key0 = (work.first_key_tile + i) * kBlockN;
        const bool masked_tile = !mask.tile_fully_visible(work.row0, work.row0 + work.rows, key0, key0 + kBlockN);
        if (masked_tile) {  // K without NaN/Inf for dQ += dS K, where masked dS elements meet it
            tile::zero_nonfinite<kBlockN, kHeadDim, Traits::kDqThreads>(smem_k + stage * kKVElements, threadIdx.x);
            __syncthreads();
        }

        float s[kSTiles][4];
        float dp[kSTiles][4];
        zero(s);
        zero(dp);
        const uint32_t stage_offset = stage * kStageBytes;
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk) {
            uint32_t q_frag[4];
            uint32_t dout_frag[4];
            ptx::ldmatrix_x4(q_frag, q_a + kk * 16 * kElementBytes);
            ptx::ldmatrix_x4(dout_frag, dout_a + kk * 16 * kElementBytes);
#pragma unroll
            for (int np = 0; np < kSTiles / 2; ++np) {
                const uint32_t offset = stage_offset + (np * 16 * kRow + kk * 16) * kElementBytes;
                uint32_t k_frag[4];
                uint32_t v_frag[4];
                ptx::ldmatrix_x4(k_frag, k_b + offset);
                ptx::ldmatrix_x4(v_frag, v_b + offset);
                ptx::mma_pair<Element>(s[2 * np], s[2 * np + 1], q_frag, k_frag);
                ptx::mma_pair<Element>(dp[2 * np], dp[2 * np + 1], dout_frag, v_frag);
            }
        }

#pragma unroll
        for (int t = 0; t < kSTiles; ++t)
#pragma unroll
            for (int c = 0; c < 4; ++c)
                probability_and_gradient(s[t][c], dp[t][c], lse_log2[c / 2], delta[c / 2], params.scale_log2);
        if (masked_tile) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int2 range = visible_keys<kBlockN>(mask, warp_row0 + lane / 4 + half * 8, key0);
#pragma unroll
                for (int t = 0; t < kSTiles; ++t) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int key = t * 8 + (lane % 4) * 2 + e;
                        if (key < range.x || key >= range.y) zero_masked(s[t][half * 2 + e], dp[t][half * 2 + e]);
                    }
                }
            }
        }

#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
            uint32_t ds_frag[4];
            tile::accumulators_to_a<Element>(ds_frag, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
            for (int cp = 0; cp < kOTiles / 2; ++cp) {
                uint32_t k_frag[4];
                ptx::ldmatrix_x4_trans(k_frag, k_bt + stage_offset + (kk * 16 * kRow + cp * 16) * kElementBytes);
                ptx::mma_pair<Element>(dq[2 * cp], dq[2 * cp + 1], ds_frag, k_frag);
            }
        }
    }
    // With no visible key tile, the Q/dO copies (spread over every thread of the block) may still
    // be in flight: a block barrier, not a warp one, before a warp reuses its Q rows.
    ptx::cp_async_wait<0>();
    __syncthreads();

    // Stage this warp's dQ rows in its own Q rows, then copy them out 16 bytes at a time.
    Element* smem_dq = smem_q + warp * 16 * kRow;
#pragma unroll
    for (int t = 0; t < kOTiles; ++t) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            *reinterpret_cast<uint32_t*>(smem_dq + (lane / 4 + half * 8) * kRow + t * 8 + (lane % 4) * 2) =
                ptx::pack2<Element>(dq[t][half * 2] * params.scale, dq[t][half * 2 + 1] * params.scale);
        }
    }
    __syncwarp();
    const int warp_rows = static_cast<int>(std::min<int64_t>(16, params.seqlen_q - warp_row0));
    tile::store_tile<16, kHeadDim, 32>(
        static_cast<Element*>(params.dq.data) + params.dq.offset(work.batch, work.head, warp_row0), smem_dq,
        params.dq.row_stride, warp_rows, head_dim, vectorized, lane);
}

// The row kernels around every backward's main kernels, for the sm_80 and Hopper launchers:
// backward_preprocess before them and, unless the deterministic dQ kernel writes dq itself,
// backward_dq_convert after them. The grids are checked on construction, before any launch.
template <int kHeadDim, typename Element>
class BackwardRowKernels {
public:
    BackwardRowKernels(const AttnBwdParams& params, const BackwardWorkspace& workspace)
        : preprocess_blocks_(grid_size(params.batch * params.heads_q * workspace.padded_rows /
                                           PreprocessTiling<kHeadDim>::kRows,
                                       "batch * heads * rows / rows-per-block (preprocess)")),
          convert_blocks_(params.deterministic
                              ? 0
                              : grid_size((params.batch * params.heads_q * params.seqlen_q * kChunksPerRow +
                                           kRowKernelThreads - 1) /
                                              kRowKernelThreads,
                                          "batch * heads * query tiles (dQ)")) {}

    void preprocess(const AttnBwdParams& params, const BackwardWorkspace& workspace, bool vectorized,
                    cudaStream_t stream) const {
        // The fp32 dQ sum is zeroed by a memset, which writes near the DRAM peak (3.2 TB/s of an
        // H100's 3.35): as stores inside the preprocess they halved its load rate.
        if (workspace.dq_accum != nullptr &&
            cudaMemsetAsync(workspace.dq_accum, 0,
                            static_cast<std::size_t>(BackwardWorkspace::dq_accum_floats(params, kHeadDim)) * sizeof(float),
                            stream) != cudaSuccess)
            return;  // the caller reports it
        backward_preprocess<kHeadDim, Element><<<preprocess_blocks_, PreprocessTiling<kHeadDim>::kThreads, 0, stream>>>(
            params, workspace, vectorized);
    }
    void convert_dq(const AttnBwdParams& params, const BackwardWorkspace& workspace, bool vectorized,
                    cudaStream_t stream) const {
        backward_dq_convert<kHeadDim, Element><<<convert_blocks_, kRowKernelThreads, 0, stream>>>(params, workspace,
                                                                                                  vectorized);
    }

private:
    static constexpr int64_t kChunksPerRow = kHeadDim / tile::kChunk;
    unsigned preprocess_blocks_;
    unsigned convert_blocks_;
};

template <int kHeadDim, typename Element>
void run_backward(const AttnBwdParams& params, const BackwardWorkspace& workspace, const cudaDeviceProp& device,
                  cudaStream_t stream) {
    using namespace backward_detail;
    using Traits = BackwardTraits<kHeadDim>;
    constexpr auto dkdv_kernel = backward_dkdv_kernel<Traits, Element>;
    constexpr auto dq_kernel = backward_dq_kernel<Traits, Element>;
    const int stages = static_cast<size_t>(Traits::shared_bytes(2)) <= device.sharedMemPerBlockOptin ? 2 : 1;
    const int dkdv_bytes = Traits::shared_bytes(stages);
    require_shared_memory(dkdv_bytes, device, params, "backward's dK/dV kernel");
    if (params.deterministic) require_shared_memory(Traits::kDqSharedBytes, device, params, "backward's dQ kernel");
    allow_shared_memory<dkdv_kernel>(dkdv_bytes);
    if (params.deterministic) allow_shared_memory<dq_kernel>(Traits::kDqSharedBytes);

    const bool vectorized = tile::chunk_aligned(params.q) && tile::chunk_aligned(params.k) &&
                            tile::chunk_aligned(params.v) && tile::chunk_aligned(params.o) &&
                            tile::chunk_aligned(params.dout) && tile::chunk_aligned(params.dq) &&
                            tile::chunk_aligned(params.dk) && tile::chunk_aligned(params.dv);
    const int64_t key_tiles = (params.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN;
    const int64_t query_tiles = (params.seqlen_q + Traits::kDqBlockM - 1) / Traits::kDqBlockM;
    const BackwardRowKernels<kHeadDim, Element> row_kernels(params, workspace);
    const unsigned dkdv_blocks = grid_size(key_tiles * params.heads_kv * params.batch, "batch * kv heads * key tiles");
    const unsigned dq_blocks =
        params.deterministic ? grid_size(query_tiles * params.heads_q * params.batch, "batch * heads * query tiles (dQ)")
                             : 0;

    row_kernels.preprocess(params, workspace, vectorized, stream);
    dkdv_kernel<<<dkdv_blocks, Traits::kThreads, dkdv_bytes, stream>>>(params, workspace, vectorized, stages);
    if (params.deterministic)
        dq_kernel<<<dq_blocks, Traits::kDqThreads, Traits::kDqSharedBytes, stream>>>(params, workspace, vectorized);
    else
        row_kernels.convert_dq(params, workspace, vectorized, stream);
}

}  // namespace fattn::cuda
