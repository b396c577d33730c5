// The sm_80 forward kernel: FlashAttention-2 on tensor cores (mma.sync m16n8k16), for every GPU of
// compute capability 8.0 and newer (on Hopper, for the problems the hopper/ kernels do not serve).
//
// Algorithm. One block per (query tile of kBlockM rows, query head, batch). Q's tile is copied to
// shared memory once; the key/value tiles visible to it (MaskSpec gives the range) stream through
// a two-stage cp.async pipeline, last tile first, so the tiles that straddle the sequence end or
// the causal diagonal come first and every later tile skips the per-element mask. Per tile:
//   S = Q K^T                 (fp32 accumulators, Q and K fragments by ldmatrix)
//   mask S (straddling tiles only: a runtime branch per tile, no extra instantiation); such a
//   tile's P V also runs without V's NaN/Inf values, added back to the rows that see them
//   online softmax in base 2: m = max(m, rowmax S); P = exp2(S * scale_log2 - m * scale_log2);
//   O = O * exp2(m_old - m) + P V   (P stays in registers as the A operand; V by ldmatrix.trans)
// At the end O /= rowsum(P) and lse = m * scale + ln(rowsum). A row with no visible key keeps
// rowsum 0: its output is zeros and its lse -inf. A row that reads a NaN or infinite q or k has
// a NaN rowsum, hence a NaN o and lse.
//
// Layouts. Global tensors are any-strided [batch, head, row, head_dim] with a contiguous head_dim
// (TensorView; all index arithmetic in int64). Query head h reads key/value head
// h / heads_per_kv (GQA/MQA without copies). Shared tiles are row-major, padded by 8 elements
// (tile.cuh), head_dim zero-filled up to the tile width kHeadDim. Warp w owns query rows
// [w * 16 * kMTiles, (w + 1) * 16 * kMTiles) of the tile: its Q rows are read by it alone, so at
// the end it stages its O rows in that same shared memory for 16-byte coalesced stores.
// When a data pointer or stride is not 16-byte aligned the copies fall back to element loads.
//
// Tile sizes (K/V reused by 128 query rows; the widest configuration per head dim that fits 255
// registers per thread, measured against FlashAttention-2 in bench/NOTES.md). Registers from
// ptxas -v (nvcc 13.0) for sm_80 / sm_90a; spills noted:
//   kHeadDim   kBlockM x kBlockN   warps   rows/warp   shared memory (2 K/V stages)   registers
//   32         128 x 128            4       32          50 KB              245 / 255 (16 B spill)
//   64         128 x 128            4       32          90 KB              254 / 255
//   128        128 x 64             4       32          102 KB             255 (16 B spill) / 255
//   96         128 x 64             8       16          78 KB              133 / 170
//   192, 256   128 x 32             8       16          100 KB, 132 KB     176 / 174, 244 / 244
// Every width fits the 163 KB a block may use on an A100 (227 KB on Hopper); GPUs with less
// (RTX 30/40, L4: 99 KB) get FATTN_ERROR_UNSUPPORTED for the widths that do not fit.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "error.h"
#include "fwd_launch.h"
#include "fwd_softmax.cuh"
#include "launch_config.h"
#include "params.h"
#include "ptx.cuh"
#include "tile.cuh"

namespace fattn::cuda {

template <int kHeadDim_, typename Element_>
struct ForwardTraits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockM = 128;
    static constexpr int kBlockN = kHeadDim <= 64 ? 128 : (kHeadDim <= 128 ? 64 : 32);
    // 8 warps of 16 rows: for 192 and 256 because 32 rows of O would need 2 * kHeadDim / 4
    // accumulator registers per thread; for 96 because its 12 chunks per row do not divide 128
    // threads, so load_tile keeps per-chunk offsets live, which spills at 4 warps.
    static constexpr int kWarps = (kHeadDim == 96 || kHeadDim >= 192) ? 8 : 4;
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kMTiles = kBlockM / (16 * kWarps);  // 16-row mma tiles per warp
    static constexpr int kWarpRows = 16 * kMTiles;
    static constexpr int kSTiles = kBlockN / 8;   // 8-column accumulator tiles of S
    static constexpr int kOTiles = kHeadDim / 8;  // 8-column accumulator tiles of O
    static constexpr int kStages = 2;
    static constexpr int kRow = tile::kPaddedRow<kHeadDim>;
    static constexpr int kQElements = kBlockM * kRow;
    static constexpr int kKVElements = kBlockN * kRow;
    static constexpr int kSharedBytes =
        static_cast<int>(sizeof(Element)) * (kQElements + 2 * kStages * kKVElements);
    static_assert(kHeadDim % 16 == 0 && kBlockN % 16 == 0, "mma k-steps are 16 wide");
};

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads) forward_kernel(const __grid_constant__ AttnParams params) {
    using Element = typename Traits::Element;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kRow = Traits::kRow;
    extern __shared__ __align__(16) unsigned char shared_bytes[];
    Element* smem_q = reinterpret_cast<Element*>(shared_bytes);
    Element* smem_k = smem_q + Traits::kQElements;                      // [kStages][kBlockN][kRow]
    Element* smem_v = smem_k + Traits::kStages * Traits::kKVElements;  // [kStages][kBlockN][kRow]

    // Blocks are numbered query tile fastest, so the tiles of one head run together and share its
    // K/V in L2; the last query tiles (the longest under a causal mask) are started first.
    const int64_t query_tiles = (params.seqlen_q + kBlockM - 1) / kBlockM;
    const int64_t block = blockIdx.x;
    const int64_t query_tile = query_tiles - 1 - block % query_tiles;
    const int64_t head = (block / query_tiles) % params.heads_q;
    const int64_t batch = block / query_tiles / params.heads_q;
    const int64_t kv_head = head / params.heads_per_kv;

    const int64_t row0 = query_tile * kBlockM;
    const int rows = static_cast<int>(std::min<int64_t>(kBlockM, params.seqlen_q - row0));
    const int head_dim = static_cast<int>(params.head_dim);
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int64_t warp_row0 = row0 + warp * Traits::kWarpRows;

    const Element* q = static_cast<const Element*>(params.q.data) + params.q.offset(batch, head, row0);
    const Element* k = static_cast<const Element*>(params.k.data) + params.k.offset(batch, kv_head, 0);
    const Element* v = static_cast<const Element*>(params.v.data) + params.v.offset(batch, kv_head, 0);
    Element* o = static_cast<Element*>(params.o.data) + params.o.offset(batch, head, row0);

    const bool vectorized = tile::chunk_aligned(params.q) && tile::chunk_aligned(params.k) &&
                            tile::chunk_aligned(params.v) && tile::chunk_aligned(params.o);

    // Key tiles [first_tile, last_tile] hold every key visible to some row of this query tile.
    const int64_t key_begin = params.mask.block_key_begin(row0);
    const int64_t key_end = params.mask.block_key_end(row0 + rows);
    // Tile indices fit in int: seqlen_k < 2^31 * 32 for any tensor that fits in memory.
    const tile::TileRange key_tiles = tile::tiles_covering<kBlockN>(key_begin, key_end);
    const int first_tile = static_cast<int>(key_tiles.first);
    const int tile_count = static_cast<int>(key_tiles.count);
    const int last_tile = first_tile + tile_count - 1;

    const auto load_key_value_tile = [&](const Element* source, int64_t row_stride, Element* stage_smem,
                                         int key_tile) {
        const int64_t key0 = static_cast<int64_t>(key_tile) * kBlockN;
        const int valid = static_cast<int>(std::min<int64_t>(kBlockN, params.seqlen_k - key0));
        tile::load_tile<kBlockN, Traits::kHeadDim, Traits::kThreads>(stage_smem, source + key0 * row_stride,
                                                                     row_stride, valid, head_dim, vectorized);
    };
    const auto load_keys = [&](int key_tile, int stage) {
        load_key_value_tile(k, params.k.row_stride, smem_k + stage * Traits::kKVElements, key_tile);
    };
    const auto load_values = [&](int key_tile, int stage) {
        load_key_value_tile(v, params.v.row_stride, smem_v + stage * Traits::kKVElements, key_tile);
    };

    ForwardAccumulators<Traits> acc;
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
#pragma unroll
        for (int ot = 0; ot < Traits::kOTiles; ++ot)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc.o[mt][ot][e] = 0.0f;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            acc.row_max[mt][half] = -INFINITY;
            acc.row_sum[mt][half] = 0.0f;
        }
    }

    // Pipeline: cp.async groups are committed in the order (Q + K_0), V_0, K_1, V_1, ... Tile i's S
    // waits for K_i with V_i still in flight; its P V waits for V_i with K_{i+1}, V_{i+1} in flight.
    tile::load_tile<kBlockM, Traits::kHeadDim, Traits::kThreads>(smem_q, q, params.q.row_stride, rows, head_dim,
                                                                 vectorized);
    if (tile_count > 0) load_keys(last_tile, 0);
    ptx::cp_async_commit();
    if (tile_count > 0) load_values(last_tile, 0);
    ptx::cp_async_commit();

    // Per-lane shared addresses of the ldmatrix operands (mma.sync fragment layouts, PTX ISA):
    // Q: 16 rows x 16 columns per x4 (lanes 16..31 address the right 8 columns);
    // K: 16 keys x 16 columns per x4, the B operands of two 8-key tiles;
    // V: 16 keys x 16 columns per x4.trans, the B operands of two 8-column tiles.
    const uint32_t q_lane =
        ptx::smem_address(smem_q + (warp * Traits::kWarpRows + lane % 16) * kRow + (lane / 16) * 8);
    const uint32_t k_lane = ptx::smem_address(smem_k + ((lane / 16) * 8 + lane % 8) * kRow + ((lane / 8) % 2) * 8);
    const uint32_t v_lane = ptx::smem_address(smem_v + (((lane / 8) % 2) * 8 + lane % 8) * kRow + (lane / 16) * 8);
    constexpr uint32_t kElementBytes = sizeof(Element);
    constexpr uint32_t kStageBytes = Traits::kKVElements * kElementBytes;

    bool nonfinite_values = false;  // a masked tile's V held a NaN or infinity (add_nonfinite_values)
    for (int i = 0; i < tile_count; ++i) {
        const int key_tile = last_tile - i;
        const int stage = i % Traits::kStages;
        ptx::cp_async_wait<1>();
        // K_i (and Q) are visible to every warp, and every warp is done with tile i - 1, so its
        // stage can take tile i + 1.
        __syncthreads();
        if (i + 1 < tile_count) load_keys(key_tile - 1, stage ^ 1);
        ptx::cp_async_commit();
        if (i + 1 < tile_count) load_values(key_tile - 1, stage ^ 1);
        ptx::cp_async_commit();

        float s[Traits::kMTiles][Traits::kSTiles][4];
#pragma unroll
        for (int mt = 0; mt < Traits::kMTiles; ++mt)
#pragma unroll
            for (int nt = 0; nt < Traits::kSTiles; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;

        const uint32_t k_stage = k_lane + stage * kStageBytes;
#pragma unroll
        for (int kk = 0; kk < Traits::kHeadDim / 16; ++kk) {
            uint32_t a[Traits::kMTiles][4];
#pragma unroll
            for (int mt = 0; mt < Traits::kMTiles; ++mt)
                ptx::ldmatrix_x4(a[mt], q_lane + (mt * 16 * kRow + kk * 16) * kElementBytes);
#pragma unroll
            for (int np = 0; np < Traits::kSTiles / 2; ++np) {
                uint32_t b[4];
                ptx::ldmatrix_x4(b, k_stage + (np * 16 * kRow + kk * 16) * kElementBytes);
#pragma unroll
                for (int mt = 0; mt < Traits::kMTiles; ++mt)
                    ptx::mma_pair<Element>(s[mt][2 * np], s[mt][2 * np + 1], a[mt], b);
            }
        }

        const int64_t key0 = static_cast<int64_t>(key_tile) * kBlockN;
        const bool masked = !params.mask.tile_fully_visible(row0, row0 + rows, key0, key0 + kBlockN);
        if (masked) mask_scores<Traits>(s, params.mask, warp_row0, key0, lane);
        online_softmax<Traits>(s, acc, params.scale_log2);

        ptx::cp_async_wait<2>();
        __syncthreads();  // V_i visible to every warp
        Element* v_tile = smem_v + stage * Traits::kKVElements;
        // A masked tile's P V runs without V's NaNs and infinities, added back after the loop.
        if (masked && __syncthreads_or(tile::zero_nonfinite<kBlockN, Traits::kHeadDim, Traits::kThreads>(
                          v_tile, static_cast<int>(threadIdx.x))))
            nonfinite_values = true;

        const uint32_t v_stage = v_lane + stage * kStageBytes;
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
            uint32_t p[Traits::kMTiles][4];
#pragma unroll
            for (int mt = 0; mt < Traits::kMTiles; ++mt)
                tile::accumulators_to_a<Element>(p[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
            for (int dp = 0; dp < Traits::kOTiles / 2; ++dp) {
                uint32_t b[4];
                ptx::ldmatrix_x4_trans(b, v_stage + (kk * 16 * kRow + dp * 16) * kElementBytes);
#pragma unroll
                for (int mt = 0; mt < Traits::kMTiles; ++mt)
                    ptx::mma_pair<Element>(acc.o[mt][2 * dp], acc.o[mt][2 * dp + 1], p[mt], b);
            }
        }
    }
    if (nonfinite_values)
        add_nonfinite_values<Traits>(acc, v, params.v.row_stride, key_begin, key_end, head_dim, params.mask, warp_row0,
                                     lane);
    // With no visible key tile, other threads' copies into this warp's Q rows may still be in
    // flight: wait for them all before the rows are reused for O.
    ptx::cp_async_wait<0>();
    __syncthreads();

    // Normalize, stage this warp's O rows in its own Q rows, write lse, then copy O out 16 bytes
    // at a time.
    Element* smem_o = smem_q + warp * Traits::kWarpRows * kRow;
    float* lse = static_cast<float*>(params.lse.data);
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const RowEnd end = finish_row(acc.row_max[mt][half], acc.row_sum[mt][half], params.scale);
            const int row = mt * 16 + lane / 4 + half * 8;
#pragma unroll
            for (int ot = 0; ot < Traits::kOTiles; ++ot) {
                const uint32_t packed = ptx::pack2<Element>(acc.o[mt][ot][half * 2] * end.inverse,
                                                            acc.o[mt][ot][half * 2 + 1] * end.inverse);
                *reinterpret_cast<uint32_t*>(smem_o + row * kRow + ot * 8 + (lane % 4) * 2) = packed;
            }
            const int64_t global_row = warp_row0 + row;
            if (lse != nullptr && lane % 4 == 0 && global_row < params.seqlen_q)
                lse[params.lse.offset(batch, head, global_row)] = end.lse;
        }
    }
    __syncwarp();
    const int warp_rows = static_cast<int>(std::min<int64_t>(Traits::kWarpRows, params.seqlen_q - warp_row0));
    tile::store_tile<Traits::kWarpRows, Traits::kHeadDim, 32>(o + warp * Traits::kWarpRows * params.o.row_stride,
                                                              smem_o, params.o.row_stride, warp_rows, head_dim,
                                                              vectorized, lane);
}

template <int kHeadDim, typename Element>
void run_forward(const AttnParams& params, const cudaDeviceProp& device, cudaStream_t stream) {
    using Traits = ForwardTraits<kHeadDim, Element>;
    constexpr auto kernel = forward_kernel<Traits>;
    require_shared_memory(Traits::kSharedBytes, device, params, "forward kernel");
    const unsigned blocks = grid_size((params.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM * params.heads_q *
                                          params.batch,
                                      "batch * heads * ceil(seqlen_q / 128) (forward)");
    allow_shared_memory<kernel>(Traits::kSharedBytes);
    kernel<<<blocks, Traits::kThreads, Traits::kSharedBytes, stream>>>(params);
}

}  // namespace fattn::cuda
