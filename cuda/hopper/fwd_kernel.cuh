// The Hopper forward kernel (sm_90a): FlashAttention-2's algorithm on Hopper's asynchronous
// units, in the manner of FlashAttention-3: TMA copies, wgmma, warp specialization.
//
// Algorithm. One block per (query tile of 128 rows, query head, batch), numbered as the sm_80
// kernel numbers them (tile::query_tile_block: the longest causal tiles start first). Three
// warpgroups with fixed roles:
//   producer  (warpgroup 0, registers lowered to 24): one thread issues the TMA copies: Q's tile
//             once, then each visible K and V tile, last tile first (the tiles that straddle the
//             sequence end or the diagonal come first, so later tiles skip the mask), into a
//             kStages-deep ring of shared-memory stages. Each stage has a "full" mbarrier that the
//             copy completes (counted in bytes) and an "empty" one the consumers arrive on.
//   consumers (warpgroups 1 and 2, registers raised to 240): each owns 64 query rows. Per tile:
//             S = Q K^T         wgmma m64n128k16, Q and K from shared memory (K-major)
//             mask S (tiles that straddle a mask bound only, as in fwd_kernel.cuh)
//             online softmax in base 2, P = exp2(S * scale_log2 - m * scale_log2) (fwd_softmax.cuh)
//             O = O * correction + P V   wgmma m64nDk16, P from registers, V MN-major
//             releasing K's stage after S and V's after P V.
// A masked tile's V has its NaNs and infinities replaced by 0 before P V (both consumer groups
// share the work and meet at a named barrier), and they are added back to exactly the rows that
// see them after the loop, as the sm_80 kernel does. The end is the sm_80 kernel's: O / rowsum,
// lse = m * scale + ln(rowsum), rows with no visible key give zeros and -inf.
//
// Layouts. Global tensors are any-strided [batch, head, row, head_dim] that TMA can address
// (tensor_map.h: 16-byte aligned, strides multiples of 16 bytes); others use the sm_80 kernels.
// Shared tiles are 128-byte swizzled (sm90.cuh): Q 128 x D, and per stage K and V 128 x D each.
// TMA fills rows past the sequence and columns past head_dim with zeros. O and lse are written
// from registers (every row's 16-byte chunk is written by 4 lanes of one warp at once).
//
// Tile sizes and resources (ptxas -v, nvcc 13.0, sm_90a): see bench/NOTES.md.
//   kHeadDim   kBlockM x kBlockN   threads   stages   shared memory
//   64         128 x 128           384       2        80 KB + barriers
//   128        128 x 128           384       2        160 KB + barriers
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fwd_softmax.cuh"
#include "hopper/fwd_launch.h"
#include "hopper/sm90.cuh"
#include "hopper/tensor_map.h"
#include "launch_config.h"
#include "params.h"
#include "tile.cuh"

namespace fattn::cuda::sm90 {

template <int kHeadDim_, typename Element_>
struct ForwardTraits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kConsumers = 2;  // warpgroups of 64 query rows
    static constexpr int kBlockM = 64 * kConsumers;
    static constexpr int kBlockN = 128;
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kConsumerThreads = 128 * kConsumers;
    static constexpr int kStages = 2;
    static constexpr int kProducerRegisters = 24;
    static constexpr int kConsumerRegisters = 240;
    // fwd_softmax.cuh's per-warp view: each warp of a consumer group owns one 16-row tile.
    static constexpr int kMTiles = 1;
    static constexpr int kSTiles = kBlockN / 8;
    static constexpr int kOTiles = kHeadDim / 8;

    using QTile = SwizzledTile<kBlockM, kHeadDim>;
    using KVTile = SwizzledTile<kBlockN, kHeadDim>;
    static constexpr uint32_t kKOffset = QTile::kBytes;
    static constexpr uint32_t kVOffset = kKOffset + kStages * KVTile::kBytes;
    static constexpr uint32_t kBarrierOffset = kVOffset + kStages * KVTile::kBytes;
    // + 1024: the dynamic shared memory is aligned up to a swizzle atom in the kernel.
    static constexpr int kSharedBytes = static_cast<int>(kBarrierOffset + (1 + 4 * kStages) * 8 + 1024);
    static_assert(kHeadDim == 64 || kHeadDim == 128, "wgmma shapes instantiated in sm90.cuh");
};

template <int kStages>
struct ForwardBarriers {
    uint64_t q_full;
    uint64_t key_full[kStages];
    uint64_t key_empty[kStages];  // one arrival per consumer warp
    uint64_t value_full[kStages];
    uint64_t value_empty[kStages];
};

// The producer thread: Q once, then K and V of every visible key tile, last tile first.
template <class Traits>
__device__ __forceinline__ void produce_tiles(ForwardBarriers<Traits::kStages>& barriers, unsigned char* shared,
                                              const tile::QueryTileBlock& work, const CUtensorMap* q_map,
                                              const CUtensorMap* k_map, const CUtensorMap* v_map) {
    using KVTile = typename Traits::KVTile;
    constexpr int kColumnBlocks = Traits::kHeadDim / 64;
    prefetch_tensor_map(q_map);
    prefetch_tensor_map(k_map);
    prefetch_tensor_map(v_map);
    const auto batch = static_cast<int32_t>(work.batch);
    const auto kv_head = static_cast<int32_t>(work.kv_head);

    mbarrier_arrive_expect_bytes(&barriers.q_full, Traits::QTile::kBytes);
#pragma unroll
    for (int block = 0; block < kColumnBlocks; ++block)
        tma_load_4d(shared + block * Traits::QTile::kBlockBytes, q_map, &barriers.q_full, block * 64,
                    static_cast<int32_t>(work.row0), static_cast<int32_t>(work.head), batch);

    const int64_t last_tile = work.first_key_tile + work.key_tiles - 1;
    for (int64_t i = 0; i < work.key_tiles; ++i) {
        const int stage = static_cast<int>(i % Traits::kStages);
        const uint32_t phase = static_cast<uint32_t>(i / Traits::kStages) & 1;
        const auto key0 = static_cast<int32_t>((last_tile - i) * Traits::kBlockN);
        const auto load = [&](uint64_t& empty, uint64_t& full, uint32_t offset, const CUtensorMap* map) {
            mbarrier_wait(&empty, phase ^ 1);
            mbarrier_arrive_expect_bytes(&full, KVTile::kBytes);
#pragma unroll
            for (int block = 0; block < kColumnBlocks; ++block)
                tma_load_4d(shared + offset + stage * KVTile::kBytes + block * KVTile::kBlockBytes, map, &full,
                            block * 64, key0, kv_head, batch);
        };
        load(barriers.key_empty[stage], barriers.key_full[stage], Traits::kKOffset, k_map);
        load(barriers.value_empty[stage], barriers.value_full[stage], Traits::kVOffset, v_map);
    }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    forward_kernel(const __grid_constant__ AttnParams params, const __grid_constant__ CUtensorMap q_map,
                   const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map) {
#if FATTN_SM90_ENABLED
    using Element = typename Traits::Element;
    using QTile = typename Traits::QTile;
    using KVTile = typename Traits::KVTile;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStages = Traits::kStages;

    extern __shared__ unsigned char shared_unaligned[];
    unsigned char* shared = shared_unaligned + (1024 - ptx::smem_address(shared_unaligned) % 1024) % 1024;
    auto& barriers = *reinterpret_cast<ForwardBarriers<kStages>*>(shared + Traits::kBarrierOffset);
    const tile::QueryTileBlock work = tile::query_tile_block<Traits::kBlockM, kBlockN>(params);
    const int warpgroup = static_cast<int>(threadIdx.x) / 128;

    if (threadIdx.x == 0) {
        constexpr uint32_t kConsumerWarps = Traits::kConsumerThreads / 32;
        mbarrier_init(&barriers.q_full, 1);
        for (int stage = 0; stage < kStages; ++stage) {
            mbarrier_init(&barriers.key_full[stage], 1);
            mbarrier_init(&barriers.value_full[stage], 1);
            mbarrier_init(&barriers.key_empty[stage], kConsumerWarps);
            mbarrier_init(&barriers.value_empty[stage], kConsumerWarps);
        }
        mbarrier_init_fence();
    }
    __syncthreads();

    if (warpgroup == 0) {
        lower_registers<Traits::kProducerRegisters>();
        if (threadIdx.x == 0) produce_tiles<Traits>(barriers, shared, work, &q_map, &k_map, &v_map);
        return;
    }
    raise_registers<Traits::kConsumerRegisters>();

    const int consumer = warpgroup - 1;
    const int consumer_thread = static_cast<int>(threadIdx.x) - 128;
    const int lane = static_cast<int>(threadIdx.x) % 32;
    const int64_t warp_row0 = work.row0 + consumer * 64 + (consumer_thread / 32 % 4) * 16;
    const uint32_t q_base = ptx::smem_address(shared);
    const uint32_t k_base = q_base + Traits::kKOffset;
    const uint32_t v_base = q_base + Traits::kVOffset;

    ForwardAccumulators<Traits> acc;
    float(&o)[Traits::kHeadDim / 2] = reinterpret_cast<float(&)[Traits::kHeadDim / 2]>(acc.o);
#pragma unroll
    for (int i = 0; i < Traits::kHeadDim / 2; ++i) o[i] = 0.0f;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        acc.row_max[0][half] = -INFINITY;
        acc.row_sum[0][half] = 0.0f;
    }

    mbarrier_wait(&barriers.q_full, 0);
    const int64_t last_tile = work.first_key_tile + work.key_tiles - 1;
    bool nonfinite_values = false;  // a masked tile's V held a NaN or infinity (add_nonfinite_values)
    for (int64_t i = 0; i < work.key_tiles; ++i) {
        const int stage = static_cast<int>(i % kStages);
        const uint32_t phase = static_cast<uint32_t>(i / kStages) & 1;
        const int64_t key0 = (last_tile - i) * kBlockN;

        float s[1][Traits::kSTiles][4];
        float(&s_flat)[kBlockN / 2] = reinterpret_cast<float(&)[kBlockN / 2]>(s);
        mbarrier_wait(&barriers.key_full[stage], phase);
        wgmma_fence();
#pragma unroll
        for (int k_step = 0; k_step < Traits::kHeadDim / 16; ++k_step)
            Wgmma<kBlockN, Element>::ss(s_flat, QTile::k_major(q_base, consumer * 64, k_step),
                                        KVTile::k_major(k_base + stage * KVTile::kBytes, 0, k_step), k_step > 0);
        wgmma_commit();
        wgmma_wait<0>();
        fence_accumulators(s_flat);
        if (lane == 0) mbarrier_arrive(&barriers.key_empty[stage]);

        // The same decision in both consumer groups (the block's rows), so both take the V pass.
        const bool masked = !params.mask.tile_fully_visible(work.row0, work.row0 + work.rows, key0, key0 + kBlockN);
        if (masked) mask_scores<Traits>(s, params.mask, warp_row0, key0, lane);
        online_softmax<Traits>(s, acc, params.scale_log2);
        uint32_t p[kBlockN / 16][4];
#pragma unroll
        for (int k_step = 0; k_step < kBlockN / 16; ++k_step)
            tile::accumulators_to_a<Element>(p[k_step], s[0][2 * k_step], s[0][2 * k_step + 1]);

        mbarrier_wait(&barriers.value_full[stage], phase);
        if (masked) {
            auto* chunks = reinterpret_cast<uint4*>(shared + Traits::kVOffset + stage * KVTile::kBytes);
            bool replaced = false;
#pragma unroll 1
            for (uint32_t chunk = consumer_thread; chunk < KVTile::kBytes / 16; chunk += Traits::kConsumerThreads)
                replaced |= tile::zero_nonfinite_chunk<Element>(chunks + chunk);
            if (replaced) fence_async_shared();  // the next reader is wgmma
            nonfinite_values |= named_barrier_or(1, Traits::kConsumerThreads, replaced);
        }
        wgmma_fence();
#pragma unroll
        for (int k_step = 0; k_step < kBlockN / 16; ++k_step)
            Wgmma<Traits::kHeadDim, Element>::rs_mn(o, p[k_step],
                                                    KVTile::mn_major(v_base + stage * KVTile::kBytes, k_step));
        wgmma_commit();
        wgmma_wait<0>();
        fence_accumulators(o);
        if (lane == 0) mbarrier_arrive(&barriers.value_empty[stage]);
    }

    const int head_dim = static_cast<int>(params.head_dim);
    if (nonfinite_values) {
        const Element* v = static_cast<const Element*>(params.v.data) + params.v.offset(work.batch, work.kv_head, 0);
        add_nonfinite_values<Traits>(acc, v, params.v.row_stride, params.mask.block_key_begin(work.row0),
                                     params.mask.block_key_end(work.row0 + work.rows), head_dim, params.mask,
                                     warp_row0, lane);
    }

    float* lse = static_cast<float*>(params.lse.data);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const RowEnd end = finish_row(acc.row_max[0][half], acc.row_sum[0][half], params.scale);
        const int64_t row = warp_row0 + lane / 4 + half * 8;
        if (row >= params.seqlen_q) continue;
        Element* o_row = static_cast<Element*>(params.o.data) + params.o.offset(work.batch, work.head, row);
#pragma unroll
        for (int ot = 0; ot < Traits::kOTiles; ++ot) {
            const int col = ot * 8 + (lane % 4) * 2;
            if (col < head_dim)
                *reinterpret_cast<uint32_t*>(o_row + col) = ptx::pack2<Element>(
                    acc.o[0][ot][half * 2] * end.inverse, acc.o[0][ot][half * 2 + 1] * end.inverse);
        }
        if (lse != nullptr && lane % 4 == 0) lse[params.lse.offset(work.batch, work.head, row)] = end.lse;
    }
#endif
}

template <int kHeadDim, typename Element>
void run_forward(const AttnParams& params, const cudaDeviceProp& device, cudaStream_t stream) {
    using Traits = ForwardTraits<kHeadDim, Element>;
    constexpr auto kernel = forward_kernel<Traits>;
    require_shared_memory(Traits::kSharedBytes, device, params, "Hopper forward kernel");
    const unsigned blocks = grid_size((params.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM * params.heads_q *
                                          params.batch,
                                      "batch * heads * ceil(seqlen_q / 128) (forward)");
    const CUtensorMap q_map = make_tile_map(query_extent(params, params.q), params.dtype, Traits::kBlockM);
    const CUtensorMap k_map = make_tile_map(key_extent(params, params.k), params.dtype, Traits::kBlockN);
    const CUtensorMap v_map = make_tile_map(key_extent(params, params.v), params.dtype, Traits::kBlockN);
    allow_shared_memory<kernel>(Traits::kSharedBytes);
    kernel<<<blocks, Traits::kThreads, Traits::kSharedBytes, stream>>>(params, q_map, k_map, v_map);
}

}  // namespace fattn::cuda::sm90
