// The Hopper backward kernel (sm_90a): the sm_80 dK/dV kernel's algorithm (bwd_kernel.cuh) on
// Hopper's asynchronous units, in the manner of FlashAttention-3: TMA copies, wgmma, warp
// specialization. The preprocess (a zeroed dQ sum, delta, lse_log2) and the dQ conversion are the
// sm_80 kernels, run before and after this one.
//
// Algorithm. One block per (key tile of kBlockN = 128 keys, kv head, batch), key tile fastest as
// in the sm_80 kernel (under a causal mask the first key tiles see the most rows and start first).
// The block walks every (query head of the kv head's group, query tile of kBlockM rows) that can
// see its keys (MaskSpec::query_begin/query_end), so GQA dK/dV need no atomics. Three warpgroups:
//   producer  (warpgroup 0, registers lowered to 24): one thread issues the copies: K and V once,
//             then per step the Q and dO tiles (TMA) and the step's lse_log2 and delta rows (bulk
//             copies of the workspace) into a kStages-deep ring, each stage with a "full" mbarrier
//             the copies complete and an "empty" one the consumer warps arrive on.
//   consumers (warpgroups 1 and 2, registers raised to 240): group c owns keys [64c, 64c + 64).
//             Per step, in the transposed orientation (rows are keys) so P^T and dS^T are born in
//             registers as the A operands of dV and dK:
//               S^T  = K_c Q^T     dP^T = V_c dO^T       wgmma SS m64n{kBlockM}k16, K-major
//               P^T  = exp2(S^T * scale_log2 - lse_log2),  dS^T = P^T * (dP^T - delta)
//                      (masked elements set to exact zeros; straddling tiles only). P^T is
//                      computed while dP^T is in flight; at kBlockM 64 dV is issued before dS^T
//                      is computed, so that dS^T overlaps it (kDvBeforeDs)
//               dV_c += P^T dO     dK_c += dS^T Q        wgmma RS m64n{kHeadDim}k16, B MN-major
//               dS^T -> shared memory (double-buffered), named barrier between the groups
//               dQ   += dS K       wgmma SS m64n64k16, A (dS^T) and B (K) MN-major; each group
//                      one 64 x 64 tile of the kBlockM x kHeadDim product (split by query rows
//                      at kHeadDim 64, by columns at 128), staged in shared memory in fp32 and
//                      added into the workspace's fp32 dQ sum by TMA reductions (cp.reduce.async.
//                      bulk.tensor, one per 32-column box: the adds are not the threads' work),
//                      issued during the next step's S^T (its fence and barrier off the path)
//             At the end dK *= scale, and dK, dV go through shared memory (the Q/dO stages) to
//             TMA stores.
// Non-finite inputs follow the sm_80 kernel's rules: K loses its NaN/Inf once per block and Q on
// masked steps (the operands that exact-zero dS elements meet in dQ and dK; the rows that read
// them have a NaN lse or delta, so nothing is lost), masked P and dS are exact zeros.
//
// Layouts. Global tensors are any-strided [batch, head, row, head_dim] that TMA can address
// (tensor_map.h); others take the sm_80 kernels (bwd_launch.h: backward_supported). Shared tiles
// are 128-byte swizzled (sm90.cuh): K, V 128 x D; per stage Q, dO kBlockM x D and kBlockM floats
// each of lse_log2 and delta; dS^T 128 x kBlockM twice; a 64 x 64 fp32 dQ tile per group. TMA
// fills rows past the sequence and columns past head_dim with zeros, and its stores and
// reductions skip them; padding query rows have lse_log2 = +inf (P = 0) and keys past seqlen_k
// are masked.
//
// Tile sizes and resources (2 stages; ptxas -v, nvcc 13.0, sm_90a; 168 registers at entry,
// consumers raised to 240):
//   kHeadDim   kBlockN x kBlockM   threads   shared memory   spills (ptxas)
//   64         128 x 128           384       195 KB          0 bytes
//   128        128 x 64            384       194 KB          24 bytes
// kBlockM is 128 at kHeadDim 64 (S^T, dP^T 64 fp32 registers each, dK, dV 32 each) and 64 at 128
// (dK, dV 64 each), the most that fits 240 registers per thread.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../bwd_kernel.cuh"  // the sm_80 backward (this file shares its name)
#include "hopper/bwd_launch.h"
#include "hopper/sm90.cuh"
#include "hopper/tensor_map.h"
#include "launch_config.h"
#include "params.h"
#include "tile.cuh"

namespace fattn::cuda::sm90 {

template <int kStages>
struct BackwardBarriers {
    uint64_t kv_full;
    uint64_t step_full[kStages];   // Q, dO, lse_log2, delta of a step
    uint64_t step_empty[kStages];  // one arrival per consumer warp
};

template <int kHeadDim_, typename Element_>
struct BackwardTraits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kConsumers = 2;  // warpgroups of 64 keys
    static constexpr int kGroupKeys = 64;
    static constexpr int kBlockN = kGroupKeys * kConsumers;
    static constexpr int kBlockM = kHeadDim == 64 ? 128 : 64;
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kConsumerThreads = 128 * kConsumers;
    static constexpr int kStages = 2;
    static constexpr int kProducerRegisters = 24;
    static constexpr int kConsumerRegisters = 240;
    // dV += P^T dO issued before dS^T is computed, so the two overlap: at kBlockM 64. At 128 the
    // fp32 P^T and dP^T with the packed P^T exceed 240 registers, so dV waits for dS^T.
    static constexpr bool kDvBeforeDs = kBlockM == 64;
    // The step's lse_log2 rows read from shared memory before its products are issued (and delta
    // before dP^T is awaited), so that the reads do not queue behind the products' operand reads:
    // at kBlockM 64. At 128 their 32 + 32 registers would spill; they are read after the waits.
    static constexpr bool kRowStatsEarly = kBlockM == 64;
    // The group index as a warp-uniform value (warpgroup_index): at kHeadDim 64 the group's K and V
    // descriptors stay in uniform registers and ptxas spills nothing, +4-7%; at 128 the same change
    // lost 5-11% though its loop was shorter. bench/NOTES.md.
    static constexpr bool kUniformWarpgroup = kHeadDim == 64;
    // dQ = dS K (kBlockM x kHeadDim) as one 64 x 64 tile per consumer group.
    static constexpr bool kDqSplitRows = kBlockM == 128;
    static_assert((kDqSplitRows ? kHeadDim : kBlockM) == 64 && (kDqSplitRows ? kBlockM : kHeadDim) == 128,
                  "two 64 x 64 dQ tiles");

    using QTile = SwizzledTile<kBlockM, kHeadDim>;  // Q and dO of a step
    using KVTile = SwizzledTile<kBlockN, kHeadDim>;
    using DsTile = SwizzledTile<kBlockN, kBlockM>;    // dS^T
    using DqTile = SwizzledTile<64, 64, 4>;           // a group's fp32 dQ tile (two 32-column boxes)
    using DkvTile = SwizzledTile<kGroupKeys, kHeadDim>;  // a group's dK or dV, stored at the end
    static constexpr uint32_t kRowStatBytes = kBlockM * sizeof(float);
    static constexpr uint32_t kKOffset = 0;
    static constexpr uint32_t kVOffset = kKOffset + KVTile::kBytes;
    static constexpr uint32_t kQOffset = kVOffset + KVTile::kBytes;
    static constexpr uint32_t kDoutOffset = kQOffset + kStages * QTile::kBytes;
    static constexpr uint32_t kDsOffset = kDoutOffset + kStages * QTile::kBytes;
    static constexpr uint32_t kDqOffset = kDsOffset + 2 * DsTile::kBytes;
    static constexpr uint32_t kLseOffset = kDqOffset + kConsumers * DqTile::kBytes;
    static constexpr uint32_t kDeltaOffset = kLseOffset + kStages * kRowStatBytes;
    static constexpr uint32_t kBarrierOffset = kDeltaOffset + kStages * kRowStatBytes;
    // + 1024: the dynamic shared memory is aligned up to a swizzle atom in the kernel.
    static constexpr int kSharedBytes = static_cast<int>(kBarrierOffset + sizeof(BackwardBarriers<kStages>) + 1024);
    static constexpr uint32_t kStepBytes = 2 * QTile::kBytes + 2 * kRowStatBytes;
    // dK and dV of both groups are staged where the Q and dO stages were.
    static constexpr uint32_t kDkOffset = kQOffset;
    static constexpr uint32_t kDvOffset = kDkOffset + kConsumers * DkvTile::kBytes;
    static_assert(2 * kConsumers * DkvTile::kBytes <= 2 * kStages * QTile::kBytes, "dK and dV fit the stages");
    static_assert(kHeadDim == 64 || kHeadDim == 128, "wgmma shapes instantiated in sm90.cuh");
    static_assert(BackwardWorkspace::kRowPadding % kBlockM == 0, "whole lse_log2/delta rows per step");
};

// The steps of a block: every (query head of its kv head's group, query tile of kBlockM rows) with
// a row that sees one of the keys [key0, key0 + keys), query tile fastest. Producer and consumers
// walk the same sequence.
template <int kBlockM>
struct QueryTileWalk {
    int64_t first_row;
    int64_t end_row;
    int64_t steps;
    int64_t head;  // the current step's query head and first row
    int64_t row0;

    __device__ __forceinline__ QueryTileWalk(const AttnParams& params, int64_t kv_head, int64_t key0, int keys) {
        const tile::TileRange tiles = tile::visible_query_tiles<kBlockM>(params.mask, key0, keys);
        first_row = tiles.first * kBlockM;
        end_row = (tiles.first + tiles.count) * kBlockM;
        steps = tiles.count * params.heads_per_kv;
        head = kv_head * params.heads_per_kv;
        row0 = first_row;
    }
    __device__ __forceinline__ void advance() {
        row0 += kBlockM;
        if (row0 == end_row) {
            row0 = first_row;
            ++head;
        }
    }
};

// The producer thread: K and V once, then Q, dO, lse_log2 and delta of every step.
template <class Traits>
__device__ __forceinline__ void produce_steps(BackwardBarriers<Traits::kStages>& barriers, unsigned char* shared,
                                              const AttnBwdParams& params, const BackwardWorkspace& workspace,
                                              QueryTileWalk<Traits::kBlockM> walk, int64_t batch, int64_t kv_head,
                                              int64_t key0, const CUtensorMap* q_map, const CUtensorMap* dout_map,
                                              const CUtensorMap* k_map, const CUtensorMap* v_map) {
    using QTile = typename Traits::QTile;
    using KVTile = typename Traits::KVTile;
    constexpr int kColumnBlocks = Traits::kHeadDim / 64;
    prefetch_tensor_map(q_map);
    prefetch_tensor_map(dout_map);
    prefetch_tensor_map(k_map);
    prefetch_tensor_map(v_map);
    const auto batch32 = static_cast<int32_t>(batch);

    mbarrier_arrive_expect_bytes(&barriers.kv_full, 2 * KVTile::kBytes);
#pragma unroll
    for (int block = 0; block < kColumnBlocks; ++block) {
        tma_load_4d(shared + Traits::kKOffset + block * KVTile::kBlockBytes, k_map, &barriers.kv_full, block * 64,
                    static_cast<int32_t>(key0), static_cast<int32_t>(kv_head), batch32);
        tma_load_4d(shared + Traits::kVOffset + block * KVTile::kBlockBytes, v_map, &barriers.kv_full, block * 64,
                    static_cast<int32_t>(key0), static_cast<int32_t>(kv_head), batch32);
    }

    for (int64_t step = 0; step < walk.steps; ++step, walk.advance()) {
        const int stage = static_cast<int>(step % Traits::kStages);
        const uint32_t phase = static_cast<uint32_t>(step / Traits::kStages) & 1;
        uint64_t* full = &barriers.step_full[stage];
        mbarrier_wait(&barriers.step_empty[stage], phase ^ 1);
        mbarrier_arrive_expect_bytes(full, Traits::kStepBytes);
        const auto row0 = static_cast<int32_t>(walk.row0);
        const auto head = static_cast<int32_t>(walk.head);
#pragma unroll
        for (int block = 0; block < kColumnBlocks; ++block) {
            const uint32_t offset = stage * QTile::kBytes + block * QTile::kBlockBytes;
            tma_load_4d(shared + Traits::kQOffset + offset, q_map, full, block * 64, row0, head, batch32);
            tma_load_4d(shared + Traits::kDoutOffset + offset, dout_map, full, block * 64, row0, head, batch32);
        }
        const int64_t stats = (batch * params.heads_q + walk.head) * workspace.padded_rows + walk.row0;
        bulk_load(shared + Traits::kLseOffset + stage * Traits::kRowStatBytes, workspace.lse_log2 + stats,
                  Traits::kRowStatBytes, full);
        bulk_load(shared + Traits::kDeltaOffset + stage * Traits::kRowStatBytes, workspace.delta + stats,
                  Traits::kRowStatBytes, full);
    }
}

// The descriptors of a launch: loads of q, dout, k, v; the reduction into the fp32 dQ sum; the
// stores of dk and dv.
struct BackwardMaps {
    CUtensorMap q, dout, k, v, dq_accum, dk, dv;
};

// Named barriers of the consumer groups (0 is __syncthreads).
enum BackwardBarrierId : int {
    kCleanBarrier = 1,     // both groups: K (once) or a masked step's Q cleaned
    kDsBarrier = 2,        // both groups: the step's dS^T written
    kEpilogueBarrier = 3,  // both groups: done with the Q/dO stages
    kGroupBarrier = 4,     // + group: the group's dQ (or dK, dV) tile written
};

// One thread of the group issues its bulk copies once the other warps have written the tile.
__device__ __forceinline__ void group_tile_written(int group, int group_thread) {
    if (group_thread < 32)
        named_barrier_sync(kGroupBarrier + group, 128);
    else
        named_barrier_arrive(kGroupBarrier + group, 128);
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    backward_kernel(const __grid_constant__ AttnBwdParams params, const BackwardWorkspace workspace,
                    const __grid_constant__ BackwardMaps maps) {
#if FATTN_SM90_ENABLED
    using namespace backward_detail;
    using Element = typename Traits::Element;
    using QTile = typename Traits::QTile;
    using KVTile = typename Traits::KVTile;
    using DsTile = typename Traits::DsTile;
    constexpr int kHeadDim = Traits::kHeadDim;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kStages = Traits::kStages;

    extern __shared__ unsigned char shared_unaligned[];
    unsigned char* shared = shared_unaligned + (1024 - ptx::smem_address(shared_unaligned) % 1024) % 1024;
    auto& barriers = *reinterpret_cast<BackwardBarriers<kStages>*>(shared + Traits::kBarrierOffset);

    const int64_t key_tiles = (params.seqlen_k + kBlockN - 1) / kBlockN;
    const int64_t block = blockIdx.x;
    const int64_t key0 = block % key_tiles * kBlockN;
    const int64_t kv_head = (block / key_tiles) % params.heads_kv;
    const int64_t batch = block / key_tiles / params.heads_kv;
    const int keys = static_cast<int>(params.seqlen_k - key0 < kBlockN ? params.seqlen_k - key0 : kBlockN);
    QueryTileWalk<kBlockM> walk(params, kv_head, key0, keys);
    const int warpgroup = warpgroup_index<Traits::kUniformWarpgroup>();

    if (threadIdx.x == 0) {
        mbarrier_init(&barriers.kv_full, 1);
        for (int stage = 0; stage < kStages; ++stage) {
            mbarrier_init(&barriers.step_full[stage], 1);
            mbarrier_init(&barriers.step_empty[stage], Traits::kConsumerThreads / 32);
        }
        mbarrier_init_fence();
    }
    __syncthreads();

    if (warpgroup == 0) {
        lower_registers<Traits::kProducerRegisters>();
        if (threadIdx.x == 0 && walk.steps > 0)
            produce_steps<Traits>(barriers, shared, params, workspace, walk, batch, kv_head, key0, &maps.q, &maps.dout,
                                  &maps.k, &maps.v);
        return;
    }
    raise_registers<Traits::kConsumerRegisters>();

    using DqTile = typename Traits::DqTile;
    using DkvTile = typename Traits::DkvTile;
    const int consumer = warpgroup - 1;
    const int consumer_thread = static_cast<int>(threadIdx.x) - 128;
    const int group_thread = consumer_thread % 128;
    const int lane = static_cast<int>(threadIdx.x) % 32;
    const int group_key0 = consumer * Traits::kGroupKeys;
    const uint32_t shared_base = ptx::smem_address(shared);
    // This group's 64 x 64 tile of dQ: its rows within the step's query tile, its columns.
    const int dq_row0 = Traits::kDqSplitRows ? consumer * 64 : 0;
    const int dq_col0 = Traits::kDqSplitRows ? 0 : consumer * 64;
    const uint32_t dq_ds_offset = Traits::kDqSplitRows ? consumer * DsTile::kBlockBytes : 0;
    unsigned char* const dq_tile = shared + Traits::kDqOffset + consumer * DqTile::kBytes;
    // This thread's first accumulator row within its group's 64 (the wgmma m64 layout; the second
    // is 8 rows on) and its first column, as offsets in the tiles it writes.
    const int fragment_row = (consumer_thread / 32) % 4 * 16 + lane / 4;
    const uint32_t ds_first = DsTile::element_offset(group_key0 + fragment_row, (lane % 4) * 2);
    const uint32_t dq_first = DqTile::element_offset(fragment_row, (lane % 4) * 2);

    float dk[kHeadDim / 2];
    float dv[kHeadDim / 2];
#pragma unroll
    for (int i = 0; i < kHeadDim / 2; ++i) {
        dk[i] = 0.0f;
        dv[i] = 0.0f;
    }

    if (walk.steps > 0) {
        // K without NaN/Inf for dQ += dS K, where masked (zero) dS elements meet every key; S^T
        // needs no poisoned key either, as the rows that read one have a NaN lse.
        mbarrier_wait(&barriers.kv_full, 0);
        zero_nonfinite_tile<Element, KVTile::kBytes, Traits::kConsumerThreads>(shared + Traits::kKOffset,
                                                                                consumer_thread);
        named_barrier_sync(kCleanBarrier, Traits::kConsumerThreads);
    }

    // dQ of a step is written to the group's tile at the step's end and reduced during the next
    // step's S^T (reduce_dq); the last step's after the loop. Reduced at the step's end, the
    // proxy fence and the group barrier before the TMA reduction held the group with no wgmma in
    // flight (both groups at once, as the dS^T barrier keeps them in step): 8-17% of the backward
    // at kHeadDim 128 (bench/NOTES.md). Every thread waits at the barrier: a sync/arrive split
    // with S^T in flight makes ptxas serialize the wgmmas (C7520). The first step reduces the
    // zeroed tile into its own rows: a branch around the reduction does the same (C7517).
    int32_t dq_row = static_cast<int32_t>(walk.row0 + dq_row0);  // the written tile's first query row
    int32_t dq_head = static_cast<int32_t>(walk.head);            // and query head
    const auto write_dq = [&](const float(&dq)[32]) {
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int t = 0; t < 8; ++t)
                *reinterpret_cast<float2*>(dq_tile + DqTile::fragment_offset(dq_first + h * 8 * 128, t)) =
                    make_float2(dq[t * 4 + h * 2], dq[t * 4 + h * 2 + 1]);
    };
    const auto reduce_dq = [&] {
        fence_async_shared();
        named_barrier_sync(kGroupBarrier + consumer, 128);
        if (group_thread == 0) {
#pragma unroll
            for (int block = 0; block < 2; ++block)
                tma_reduce_add_4d(&maps.dq_accum, dq_tile + block * DqTile::kBlockBytes, dq_col0 + block * 32, dq_row,
                                  dq_head, static_cast<int32_t>(batch));
            bulk_commit();
        }
    };
    {
        const float zeros[32] = {};
        write_dq(zeros);
    }

    const MaskSpec& mask = params.mask;
    for (int64_t step = 0; step < walk.steps; ++step, walk.advance()) {
        const int stage = static_cast<int>(step % kStages);
        const uint32_t phase = static_cast<uint32_t>(step / kStages) & 1;
        const int64_t row0 = walk.row0;
        const int rows = static_cast<int>(params.seqlen_q - row0 < kBlockM ? params.seqlen_q - row0 : kBlockM);
        // Shared addresses from a base the compiler cannot see through, so that the wgmma
        // descriptors are derived inside the step: hoisted out of the loop they would hold ~20
        // registers, spilled and reloaded every step.
        const uint32_t base = opaque(shared_base);
        const uint32_t k_base = base + Traits::kKOffset;
        const uint32_t v_base = base + Traits::kVOffset;
        const uint32_t q_stage = base + Traits::kQOffset + stage * QTile::kBytes;
        const uint32_t dout_stage = base + Traits::kDoutOffset + stage * QTile::kBytes;
        // The same decision in both groups (the step's rows x the block's keys).
        const bool masked = !mask.tile_fully_visible(row0, row0 + rows, key0, key0 + kBlockN);

        mbarrier_wait(&barriers.step_full[stage], phase);
        if (masked) {  // Q without NaN/Inf for dK += dS^T Q, where masked dS elements meet it
            zero_nonfinite_tile<Element, QTile::kBytes, Traits::kConsumerThreads>(
                shared + Traits::kQOffset + stage * QTile::kBytes, consumer_thread);
            named_barrier_sync(kCleanBarrier, Traits::kConsumerThreads);
        }

        const auto* lse_log2 =
            reinterpret_cast<const float2*>(shared + Traits::kLseOffset + stage * Traits::kRowStatBytes);
        const auto* delta =
            reinterpret_cast<const float2*>(shared + Traits::kDeltaOffset + stage * Traits::kRowStatBytes);
        float2 row_lse_log2[kBlockM / 8];
        const auto load_lse = [&] {
#pragma unroll
            for (int t = 0; t < kBlockM / 8; ++t) row_lse_log2[t] = lse_log2[t * 4 + lane % 4];
        };
        float2 row_delta[kBlockM / 8];
        const auto load_delta = [&] {
#pragma unroll
            for (int t = 0; t < kBlockM / 8; ++t) row_delta[t] = delta[t * 4 + lane % 4];
        };

        // S^T and dP^T: this group's 64 keys x the step's kBlockM queries, [8-query tile][4].
        float s[kBlockM / 8][4];
        float dp[kBlockM / 8][4];
        float(&s_flat)[kBlockM / 2] = reinterpret_cast<float(&)[kBlockM / 2]>(s);
        float(&dp_flat)[kBlockM / 2] = reinterpret_cast<float(&)[kBlockM / 2]>(dp);
        wgmma_fence();
#pragma unroll
        for (int k_step = 0; k_step < kHeadDim / 16; ++k_step)
            Wgmma<kBlockM, Element>::ss(s_flat, KVTile::k_major(k_base, group_key0, k_step),
                                        QTile::k_major(q_stage, 0, k_step), k_step > 0);
        wgmma_commit();
        // The previous step's dQ reduced while S^T runs (its tile is free: the dS^T barrier of that
        // step came after the wait for the reduction before it). Measured against after dP^T's
        // issue too: there it gains 2-4% less at kHeadDim 128 (bench/NOTES.md).
        reduce_dq();
        if constexpr (Traits::kRowStatsEarly) load_lse();
        wgmma_fence();  // dP^T's accumulators after the registers written since S^T's issue
#pragma unroll
        for (int k_step = 0; k_step < kHeadDim / 16; ++k_step)
            Wgmma<kBlockM, Element>::ss(dp_flat, KVTile::k_major(v_base, group_key0, k_step),
                                        QTile::k_major(dout_stage, 0, k_step), k_step > 0);
        wgmma_commit();

        // Element (key g [+8], query 2t [+1]) of each 8-query tile is s[t][h * 2 + e].
        // zero_hidden(values) sets the invisible ones to exact zeros on a masked step: each of the
        // thread's two keys sees the queries [query_begin, query_end) (none past seqlen_k), taken
        // relative to the thread's first query so that each element compares a constant, 8t + e.
        const auto zero_hidden = [&](float(&values)[kBlockM / 8][4]) {
            const int64_t first_query = row0 + (lane % 4) * 2;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int64_t key = key0 + group_key0 + fragment_row + h * 8;
                const int begin = static_cast<int>(std::clamp<int64_t>(mask.query_begin(key) - first_query, 0, kBlockM));
                const int end = key < params.seqlen_k ? static_cast<int>(std::clamp<int64_t>(
                                                            mask.query_end(key) - first_query, 0, kBlockM))
                                                      : 0;
#pragma unroll
                for (int t = 0; t < kBlockM / 8; ++t)
#pragma unroll
                    for (int e = 0; e < 2; ++e)
                        if (t * 8 + e < begin || t * 8 + e >= end) values[t][h * 2 + e] = 0.0f;
            }
        };
        // f(t, i) for each element i of 8-query tile t; of_query(rows[t], i) is its query's value
        // in a per-query row statistic.
        const auto for_each_element = [](auto&& f) {
#pragma unroll
            for (int t = 0; t < kBlockM / 8; ++t)
#pragma unroll
                for (int i = 0; i < 4; ++i) f(t, i);
        };
        const auto of_query = [](float2 pair, int i) { return i % 2 == 0 ? pair.x : pair.y; };
        // P^T = exp2(S^T * scale_log2 - lse_log2) in place, while dP^T is in flight. A row with
        // lse_log2 = +inf (no visible key, or padding) gets P = 0; masked elements are set to
        // exact zeros, as their row's lse may be NaN (a row that reads a NaN).
        wgmma_wait<1>();
        fence_accumulators(s_flat);
        if constexpr (!Traits::kRowStatsEarly) load_lse();
        for_each_element([&](int t, int i) {
            s[t][i] = ptx::exp2_approx(fmaf(s[t][i], params.scale_log2, -of_query(row_lse_log2[t], i)));
        });
        if (masked) zero_hidden(s);

        // P^T as the A operand of dV += P^T dO (16 queries per k step).
        uint32_t p[kBlockM / 16][4];
        const auto issue_dv = [&] {
#pragma unroll
            for (int k_step = 0; k_step < kBlockM / 16; ++k_step)
                tile::accumulators_to_a<Element>(p[k_step], s[2 * k_step], s[2 * k_step + 1]);
            wgmma_fence();
#pragma unroll
            for (int k_step = 0; k_step < kBlockM / 16; ++k_step)
                Wgmma<kHeadDim, Element>::rs_mn(dv, p[k_step], QTile::mn_major(dout_stage, k_step));
            wgmma_commit();
        };
        if constexpr (Traits::kDvBeforeDs) issue_dv();

        // dS^T = P^T * (dP^T - delta) in place (exact zeros where masked, as delta may be NaN).
        if constexpr (Traits::kRowStatsEarly) load_delta();
        wgmma_wait<Traits::kDvBeforeDs ? 1 : 0>();
        fence_accumulators(dp_flat);
        if constexpr (!Traits::kRowStatsEarly) load_delta();
        for_each_element([&](int t, int i) { dp[t][i] = s[t][i] * (dp[t][i] - of_query(row_delta[t], i)); });
        if (masked) zero_hidden(dp);
        if constexpr (!Traits::kDvBeforeDs) issue_dv();

        // dS^T as the A operand of dK += dS^T Q, and to shared memory for dQ.
        uint32_t ds[kBlockM / 16][4];
        const int buffer = static_cast<int>(step % 2);
        unsigned char* ds_tile = shared + Traits::kDsOffset + buffer * DsTile::kBytes;
#pragma unroll
        for (int k_step = 0; k_step < kBlockM / 16; ++k_step) {
            tile::accumulators_to_a<Element>(ds[k_step], dp[2 * k_step], dp[2 * k_step + 1]);
#pragma unroll
            for (int i = 0; i < 4; ++i)  // a[i]: query tile 2 * k_step + i / 2, key row g + 8 * (i % 2)
                *reinterpret_cast<uint32_t*>(ds_tile + DsTile::fragment_offset(ds_first + (i % 2) * 8 * 128,
                                                                               2 * k_step + i / 2)) = ds[k_step][i];
        }
        fence_async_shared();  // dS^T's next reader is wgmma

        wgmma_fence();
#pragma unroll
        for (int k_step = 0; k_step < kBlockM / 16; ++k_step)
            Wgmma<kHeadDim, Element>::rs_mn(dk, ds[k_step], QTile::mn_major(q_stage, k_step));
        wgmma_commit();

        // The previous step's dQ reduction has read this group's dQ tile before any thread, past
        // this barrier, writes the next one.
        if (group_thread == 0) bulk_wait_read<0>();
        named_barrier_sync(kDsBarrier, Traits::kConsumerThreads);  // both groups' dS^T written
        float dq[32];
        wgmma_fence();
        const uint32_t dq_base = opaque(shared_base);  // as `base`: the descriptors computed here
        const uint32_t ds_base = dq_base + Traits::kDsOffset + buffer * DsTile::kBytes + dq_ds_offset;
        const uint32_t dq_k_base =
            dq_base + Traits::kKOffset + (Traits::kDqSplitRows ? 0 : consumer * KVTile::kBlockBytes);
#pragma unroll
        for (int k_step = 0; k_step < kBlockN / 16; ++k_step)
            Wgmma<64, Element>::ss_mn(dq, DsTile::mn_major(ds_base, k_step), KVTile::mn_major(dq_k_base, k_step),
                                      k_step > 0);
        wgmma_commit();
        wgmma_wait<1>();  // dV and dK done: the stage's Q and dO are free
        fence_accumulators(dk);
        fence_accumulators(dv);
        warp_arrive(&barriers.step_empty[stage], lane);  // after every lane's reads of lse_log2/delta
        wgmma_wait<0>();
        fence_accumulators(dq);
        write_dq(dq);
        dq_row = static_cast<int32_t>(row0 + dq_row0);
        dq_head = static_cast<int32_t>(walk.head);
    }
    if (walk.steps > 0) reduce_dq();

    // dK and dV of the group's 64 keys through shared memory to TMA stores, which skip keys past
    // seqlen_k and columns past head_dim.
    named_barrier_sync(kEpilogueBarrier, Traits::kConsumerThreads);
    unsigned char* const dk_tile = shared + Traits::kDkOffset + consumer * DkvTile::kBytes;
    unsigned char* const dv_tile = shared + Traits::kDvOffset + consumer * DkvTile::kBytes;
    const uint32_t dkv_first = DkvTile::element_offset(fragment_row, (lane % 4) * 2);
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int t = 0; t < kHeadDim / 8; ++t) {
            const uint32_t offset = DkvTile::fragment_offset(dkv_first + h * 8 * 128, t);
            *reinterpret_cast<uint32_t*>(dk_tile + offset) =
                ptx::pack2<Element>(dk[t * 4 + h * 2] * params.scale, dk[t * 4 + h * 2 + 1] * params.scale);
            *reinterpret_cast<uint32_t*>(dv_tile + offset) = ptx::pack2<Element>(dv[t * 4 + h * 2], dv[t * 4 + h * 2 + 1]);
        }
    fence_async_shared();
    group_tile_written(consumer, group_thread);
    if (group_thread == 0) {
        const auto key = static_cast<int32_t>(key0 + group_key0);
#pragma unroll
        for (int block = 0; block < kHeadDim / 64; ++block) {
            tma_store_4d(&maps.dk, dk_tile + block * DkvTile::kBlockBytes, block * 64, key,
                         static_cast<int32_t>(kv_head), static_cast<int32_t>(batch));
            tma_store_4d(&maps.dv, dv_tile + block * DkvTile::kBlockBytes, block * 64, key,
                         static_cast<int32_t>(kv_head), static_cast<int32_t>(batch));
        }
        bulk_commit();
        bulk_wait_all();  // the stores and the last dQ reduction, before the block's shared memory goes
    }
#endif
}

template <int kHeadDim, typename Element>
void run_backward(const AttnBwdParams& params, const BackwardWorkspace& workspace, const cudaDeviceProp& device,
                  cudaStream_t stream) {
    using Traits = BackwardTraits<kHeadDim, Element>;
    constexpr auto kernel = backward_kernel<Traits>;
    require_shared_memory(Traits::kSharedBytes, device, params, "Hopper backward kernel");
    const int64_t key_tiles = (params.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN;
    const unsigned blocks = grid_size(key_tiles * params.heads_kv * params.batch, "batch * kv heads * key tiles");
    const BackwardRowKernels<kHeadDim, Element> row_kernels(params, workspace);
    const bool vectorized = tile::chunk_aligned(params.o) && tile::chunk_aligned(params.dout) &&
                            tile::chunk_aligned(params.dq);
    // The fp32 dQ sum: [batch, heads_q, seqlen_q, kHeadDim], contiguous.
    const TensorView dq_accum{workspace.dq_accum, params.heads_q * params.seqlen_q * kHeadDim,
                              params.seqlen_q * kHeadDim, kHeadDim};
    const BackwardMaps maps{
        make_tile_map(query_extent(params, params.q), params.dtype, Traits::kBlockM),
        make_tile_map(query_extent(params, params.dout), params.dtype, Traits::kBlockM),
        make_tile_map(key_extent(params, params.k), params.dtype, Traits::kBlockN),
        make_tile_map(key_extent(params, params.v), params.dtype, Traits::kBlockN),
        make_tile_map({&dq_accum, params.batch, params.heads_q, params.seqlen_q, kHeadDim}, DType::F32, 64),
        make_tile_map(key_extent(params, params.dk), params.dtype, Traits::kGroupKeys),
        make_tile_map(key_extent(params, params.dv), params.dtype, Traits::kGroupKeys)};
    allow_shared_memory<kernel>(Traits::kSharedBytes);

    row_kernels.preprocess(params, workspace, vectorized, stream);
    kernel<<<blocks, Traits::kThreads, Traits::kSharedBytes, stream>>>(params, workspace, maps);
    row_kernels.convert_dq(params, workspace, vectorized, stream);
}

}  // namespace fattn::cuda::sm90
