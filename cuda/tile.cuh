// Small tile helpers shared by the sm_80 kernels (forward and backward): the padded shared-memory
// tile layout, predicated global->shared tile copies, mma fragment conversions and the quad
// reductions of the online softmax.
//
// Shared-memory tiles are row-major with each row padded by 8 elements (16 bytes): for a tile
// width D that is a multiple of 16, a row is 4 * (D/8 + 1) words with D/8 + 1 odd, so the 8 rows
// of one ldmatrix 8x8 matrix start in 8 distinct groups of 4 banks. ldmatrix (plain and .trans)
// and the accumulator stores are then conflict-free for every tile width, with no swizzle.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "params.h"
#include "ptx.cuh"

namespace fattn::cuda::tile {

// Elements per shared-memory row of a tile that holds `kCols` columns.
template <int kCols>
inline constexpr int kPaddedRow = kCols + 8;

// Elements per 16-byte chunk, the unit of every global<->shared copy.
inline constexpr int kChunk = 8;

// Whether every row of `view` starts on a 16-byte boundary (base aligned, every stride a whole
// number of chunks), so its rows move in 16-byte chunks.
FATTN_HOST_DEVICE bool chunk_aligned(const TensorView& view) {
    return reinterpret_cast<uintptr_t>(view.data) % 16 == 0 &&
           (view.batch_stride | view.head_stride | view.row_stride) % kChunk == 0;
}

// Copies a kRows x kCols tile from global memory (row-major, `row_stride` elements between rows)
// into a padded shared tile. Rows >= valid_rows and columns >= valid_cols are zero-filled and never
// read from global memory. valid_cols is a multiple of 8, so a 16-byte chunk is all in or all out.
// With `vectorized` (base and stride 16-byte aligned) the copy is asynchronous (cp.async; the
// caller commits and waits); otherwise each element is loaded and stored synchronously (the
// caller's barrier makes them visible).
template <int kRows, int kCols, int kThreads, typename Element>
__device__ __forceinline__ void load_tile(Element* smem, const Element* global, int64_t row_stride, int valid_rows,
                                          int valid_cols, bool vectorized) {
    constexpr int kChunksPerRow = kCols / kChunk;
    constexpr int kChunks = kRows * kChunksPerRow;
    static_assert(kCols % kChunk == 0, "tile width must be a multiple of 8 elements");
    static_assert(kChunks % kThreads == 0, "every thread copies the same number of chunks");
    if (!vectorized) {
        // The rare misaligned case: a compact loop, so it adds little code to the callers' loops.
#pragma unroll 1
        for (int chunk = static_cast<int>(threadIdx.x); chunk < kChunks; chunk += kThreads) {
            const int row = chunk / kChunksPerRow;
            const int col = (chunk % kChunksPerRow) * kChunk;
            const bool valid = row < valid_rows && col < valid_cols;
            const Element* source = global + (valid ? row * row_stride + col : 0);
#pragma unroll
            for (int e = 0; e < kChunk; ++e)
                smem[row * kPaddedRow<kCols> + col + e] = valid ? source[e] : Element(0.0f);
        }
        return;
    }
    const auto copy_chunk = [&](int row, int col, const Element* source) {
        const bool valid = row < valid_rows && col < valid_cols;
        ptx::cp_async_16(ptx::smem_address(smem + row * kPaddedRow<kCols> + col), valid ? source : global, valid);
    };
    if constexpr (kThreads % kChunksPerRow == 0) {
        // Each thread keeps one column and walks down the rows with a single pointer, so no
        // per-chunk 64-bit offsets stay live across the caller's loop (they cost registers).
        constexpr int kRowStep = kThreads / kChunksPerRow;
        const int col = (static_cast<int>(threadIdx.x) % kChunksPerRow) * kChunk;
        int row = static_cast<int>(threadIdx.x) / kChunksPerRow;
        const Element* source = global + row * row_stride + col;
#pragma unroll
        for (int i = 0; i < kRows / kRowStep; ++i, row += kRowStep, source += kRowStep * row_stride)
            copy_chunk(row, col, source);
    } else {
#pragma unroll
        for (int i = 0; i < kChunks / kThreads; ++i) {
            const int chunk = static_cast<int>(threadIdx.x) + i * kThreads;
            const int row = chunk / kChunksPerRow;
            const int col = (chunk % kChunksPerRow) * kChunk;
            copy_chunk(row, col, global + row * row_stride + col);
        }
    }
}

// Copies the first valid_rows x valid_cols of a padded shared tile to global memory (row-major,
// `row_stride` elements between rows), 16 bytes at a time when `vectorized`. The kThreads threads
// numbered `lane` = 0..kThreads-1 cooperate (a warp storing its own rows, or a whole block).
template <int kRows, int kCols, int kThreads, typename Element>
__device__ __forceinline__ void store_tile(Element* global, const Element* smem, int64_t row_stride, int valid_rows,
                                           int valid_cols, bool vectorized, int lane) {
    constexpr int kChunksPerRow = kCols / kChunk;
    constexpr int kChunks = kRows * kChunksPerRow;
    static_assert(kChunks % kThreads == 0, "every thread copies the same number of chunks");
#pragma unroll
    for (int i = 0; i < kChunks / kThreads; ++i) {
        const int chunk = lane + i * kThreads;
        const int row = chunk / kChunksPerRow;
        const int col = (chunk % kChunksPerRow) * kChunk;
        if (row >= valid_rows || col >= valid_cols) continue;
        const Element* source = smem + row * kPaddedRow<kCols> + col;
        Element* destination = global + row * row_stride + col;
        if (vectorized) {
            *reinterpret_cast<uint4*>(destination) = *reinterpret_cast<const uint4*>(source);
        } else {
#pragma unroll
            for (int e = 0; e < kChunk; ++e) destination[e] = source[e];
        }
    }
}

// Bit 15 of each 16-bit half of the result is set where that element of `word` is non-finite
// (exponent bits all ones): adding the exponent's lowest bit carries into bit 15 exactly then, and
// never into the next half. Three instructions per word, where comparing each half costs about ten.
template <typename Element>
__device__ __forceinline__ uint32_t nonfinite_halves(uint32_t word) {
    static_assert(sizeof(Element) == 2, "16-bit elements, two per word");
    constexpr bool kBf16 = std::is_same_v<Element, __nv_bfloat16>;
    constexpr uint32_t kExponents = kBf16 ? 0x7f807f80u : 0x7c007c00u;
    constexpr uint32_t kLowestBits = kBf16 ? 0x00800080u : 0x04000400u;
    return ((word & kExponents) + kLowestBits) & 0x80008000u;
}

// The same marks for the eight elements of a 16-byte chunk, ORed together: non-zero when any is.
template <typename Element>
__device__ __forceinline__ uint32_t nonfinite_halves(const uint4& words) {
    return nonfinite_halves<Element>(words.x) | nonfinite_halves<Element>(words.y) |
           nonfinite_halves<Element>(words.z) | nonfinite_halves<Element>(words.w);
}

// Replaces the NaNs and infinities among the eight 16-bit elements at `chunk` (shared memory) by
// 0; returns whether there were any. It serves the operands that a masked P or dS (exactly 0)
// multiplies in an mma: 0 * NaN would carry a non-finite input to rows or keys that never read it.
// The backward loses nothing by it: a row that reads a non-finite q or k has a NaN lse (or a
// non-finite o, hence delta), so its P or dS is non-finite on every key it sees (bwd_kernel.cuh);
// the forwards add the replaced values of V back to the rows that see them (fwd_softmax.cuh).
template <typename Element>
__device__ __forceinline__ bool zero_nonfinite_chunk(uint4* chunk) {
    const uint4 words = *chunk;
    if (nonfinite_halves<Element>(words) == 0) return false;
    // Each non-finite half's bit 15 spread over its 16 bits: the halves to clear.
    const auto keep_finite = [](uint32_t word) {
        return word & ~((nonfinite_halves<Element>(word) >> 15) * 0xffffu);
    };
    *chunk = make_uint4(keep_finite(words.x), keep_finite(words.y), keep_finite(words.z), keep_finite(words.w));
    return true;
}

// zero_nonfinite_chunk over a padded kRows x kCols shared tile; the kThreads threads numbered
// `thread` cooperate (the caller's barriers order it with the tile's other readers and writers).
// Returns whether this thread replaced anything.
template <int kRows, int kCols, int kThreads, typename Element>
__device__ __forceinline__ bool zero_nonfinite(Element* smem, int thread) {
    constexpr int kChunksPerRow = kCols / kChunk;
    bool replaced = false;
#pragma unroll 1
    for (int chunk = thread; chunk < kRows * kChunksPerRow; chunk += kThreads)
        replaced |= zero_nonfinite_chunk<Element>(reinterpret_cast<uint4*>(
            smem + (chunk / kChunksPerRow) * kPaddedRow<kCols> + (chunk % kChunksPerRow) * kChunk));
    return replaced;
}

// The four mma accumulator registers of two adjacent 8-column tiles (C layout: row g holds
// c[0..1], row g+8 holds c[2..3]) become one 16x16 A operand: the P of P*V straight from
// registers, as FlashAttention-2 does.
template <typename Element>
__device__ __forceinline__ void accumulators_to_a(uint32_t (&a)[4], const float (&left)[4], const float (&right)[4]) {
    a[0] = ptx::pack2<Element>(left[0], left[1]);
    a[1] = ptx::pack2<Element>(left[2], left[3]);
    a[2] = ptx::pack2<Element>(right[0], right[1]);
    a[3] = ptx::pack2<Element>(right[2], right[3]);
}

// The four lanes of a quad (lane / 4 equal) share one accumulator row: reduce across them.
__device__ __forceinline__ float quad_max(float value) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, 1));
    return fmaxf(value, __shfl_xor_sync(0xffffffffu, value, 2));
}

__device__ __forceinline__ float quad_sum(float value) {
    value += __shfl_xor_sync(0xffffffffu, value, 1);
    return value + __shfl_xor_sync(0xffffffffu, value, 2);
}

// Online-softmax exponent offset for a row whose running max is `row_max`: the row's values
// become exp2(s * scale_log2 - offset). A row that has seen no visible key yet (max = -inf) uses
// 0, so that exp2(-inf - offset) = 0 instead of NaN.
__device__ __forceinline__ float softmax_offset(float row_max, float scale_log2) {
    return row_max == -INFINITY ? 0.0f : row_max * scale_log2;
}

// Tiles [first, first + count) of kBlock rows or keys: those that hold one of [begin, end).
struct TileRange {
    int64_t first;
    int64_t count;
};

template <int kBlock>
FATTN_HOST_DEVICE TileRange tiles_covering(int64_t begin, int64_t end) {
    const int64_t first = begin / kBlock;
    return {first, end > begin ? (end - 1) / kBlock - first + 1 : 0};
}

// The key tiles of kBlockN keys that hold every key one of the rows [row0, row0 + rows) sees
// (MaskSpec). The forward kernels walk these; the Hopper forward's host-side choice of tiling
// counts them.
template <int kBlockN>
FATTN_HOST_DEVICE TileRange visible_key_tiles(const MaskSpec& mask, int64_t row0, int64_t rows) {
    return tiles_covering<kBlockN>(mask.block_key_begin(row0), mask.block_key_end(row0 + rows));
}

// The query tiles of kBlockM rows that hold every row that sees one of the keys [key0, key0 +
// keys): the backward kernels' steps for a key block.
template <int kBlockM>
FATTN_HOST_DEVICE TileRange visible_query_tiles(const MaskSpec& mask, int64_t key0, int64_t keys) {
    return tiles_covering<kBlockM>(mask.query_begin(key0), mask.query_end(key0 + keys - 1));
}

// Work item `block` (a block's index, or a persistent block's current item) of a grid of query
// tiles numbered tile fastest (last tile first, so the tiles that see the most keys under a
// causal mask start first), then query head, then batch:
// rows [row0, row0 + rows) of query head `head` (reading key/value head `kv_head`), and the key
// tiles [first_key_tile, first_key_tile + key_tiles) of kBlockN keys that hold every key one of
// those rows sees (MaskSpec).
struct QueryTileBlock {
    int64_t batch;
    int64_t head;
    int64_t kv_head;
    int64_t row0;
    int rows;
    int64_t first_key_tile;
    int64_t key_tiles;
};

template <int kBlockM, int kBlockN>
__device__ __forceinline__ QueryTileBlock query_tile_block(const AttnParams& params, int64_t block) {
    QueryTileBlock work;
    const int64_t query_tiles = (params.seqlen_q + kBlockM - 1) / kBlockM;
    work.row0 = (query_tiles - 1 - block % query_tiles) * kBlockM;
    work.head = (block / query_tiles) % params.heads_q;
    work.batch = block / query_tiles / params.heads_q;
    work.kv_head = work.head / params.heads_per_kv;
    const int64_t rows_left = params.seqlen_q - work.row0;
    work.rows = static_cast<int>(rows_left < kBlockM ? rows_left : kBlockM);
    const TileRange key_tiles = visible_key_tiles<kBlockN>(params.mask, work.row0, work.rows);
    work.first_key_tile = key_tiles.first;
    work.key_tiles = key_tiles.count;
    return work;
}

}  // namespace fattn::cuda::tile
