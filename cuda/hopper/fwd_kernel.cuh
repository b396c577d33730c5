// The Hopper forward kernel (sm_90a): FlashAttention-2's algorithm on Hopper's asynchronous
// units, in the manner of FlashAttention-3: TMA copies, wgmma, warp specialization, persistent
// blocks.
//
// Algorithm. One persistent block per SM walks work items (query tile of kBlockM rows, query
// head, batch), numbered as the sm_80 kernel numbers its blocks (tile::query_tile_block: the
// longest causal tiles first), claiming them dynamically (produce_tiles). Warpgroups with fixed
// roles:
//   producer  (warpgroup 0, registers lowered by setmaxnreg): one thread claims the items,
//             describes each in a ring of work slots (its tiling, computed once), and issues the
//             TMA copies: each item's Q tile into a Q slot (two, or one beside 160-key tiles),
//             then each visible K and V tile, first tile first (step_key_tile says why), into a
//             kStages-deep ring of shared-memory stages that runs on across items. Each stage (and
//             Q slot) has a "full" mbarrier that the copy completes (counted in bytes) and an
//             "empty" one the consumer warps arrive on. At D=128 V has its own loader thread (the
//             warpgroup's last warp; ForwardTraits::kValueLoader says why), and the producer
//             issues Q and K only.
//   cleaners  (warps 1..3 of warpgroup 0, 1..2 beside a value loader): follow the same items and
//             tiles; a masked tile's V has its NaNs and infinities replaced by 0 (P is exactly 0
//             there, and 0 * NaN is NaN) before its "clean" mbarrier lets the consumers read it,
//             with a flag saying whether any were; they are added back to exactly the rows that
//             see them after the loop, as the sm_80 kernel does. Off the consumers' path, so
//             their groups never meet.
//   consumers (warpgroups 1..kConsumers, registers raised): each owns 64 query rows. Per tile:
//             S = Q K^T         wgmma m64nNk16 (N = kBlockN), Q and K from shared memory (K-major)
//             mask S (tiles that straddle a mask bound only, as in fwd_kernel.cuh)
//             online softmax in base 2, P = exp2(S * scale_log2 - m * scale_log2) (fwd_softmax.cuh)
//             O = O * correction + P V   wgmma m64nDk16, P from registers, V MN-major
//             software-pipelined: tile i's S is issued with tile i-1's P V, and tile i's softmax
//             runs while that P V is in flight (at D=128 the wait for it follows the softmax),
//             across items too (an item's first S goes with the previous item's last P V, whose
//             rows are then written); the groups take turns issuing their wgmmas, so one group's
//             softmax overlaps another's products. A group whose 64 rows all lie past the
//             sequence end (the last query tile of a head) computes only its item's first step
//             and passes the rest (pass_steps).
// The end is the sm_80 kernel's: O / rowsum,
// lse = m * scale + ln(rowsum), rows with no visible key give zeros and -inf.
//
// Layouts. Global tensors are any-strided [batch, head, row, head_dim] that TMA can address
// (tensor_map.h: 16-byte aligned, strides multiples of 16 bytes); others use the sm_80 kernels.
// Shared tiles are 128-byte swizzled (sm90.cuh): kQSlots Q slots of kBlockM x D, per stage K and
// V kBlockN x D, and per consumer group a 64 x D O tile.
// TMA fills rows past the sequence and columns past head_dim with zeros. Each group writes its O
// rows into its O tile and one thread stores the tile by TMA, which skips rows past seqlen_q and
// columns past head_dim; lse is written from registers.
//
// Tile sizes and resources (ptxas -v, nvcc 13.0, sm_90a; measurements in bench/NOTES.md):
//   kHeadDim  kBlockM x kBlockN  consumers  threads  registers (producer / consumer)  shared memory  spill stores
//   64        192 x 128          3          512      32 / 160                         136 KB         116 B
//   64        128 x 128          2          384      56 / 224                         112 KB         0
//   128       128 x 128          2          384      56 / 224                         224 KB         0
//   128       128 x 160          2          384      24 / 240                         224 KB         300 B
// The spills are in the producer warpgroup and at item boundaries; the main loop has none.
// At D=64 run_forward picks between the first two by the elements each would compute, at D=128
// by the items' length (160-key tiles leave room for one Q slot only).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "fwd_softmax.cuh"
#include "hopper/fwd_launch.h"
#include "hopper/sm90.cuh"
#include "hopper/tensor_map.h"
#include "launch_config.h"
#include "params.h"
#include "tile.cuh"

namespace fattn::cuda::sm90 {

// The producer describes each work item once, in a ring of kWorkSlots (item_round % kWorkSlots):
// its tiling, read by the consumers and cleaners instead of each recomputing it (64-bit divisions
// on the consumers' path between items), or that the block's work is done. A slot is free again
// once every consumer warp has written the item's rows (the cleaners read it before they release
// the item's Q slot, which the producer needs before it can describe the slot's next item).
struct WorkSlot {
    bool done;  // no more items; `work` is unset
    tile::QueryTileBlock work;
};
constexpr int kWorkSlots = 4;

// Q has kQSlots slots, taken by work items in turn (item_round % kQSlots). With two, the next
// item's Q is in place when the consumers issue its first Q K^T with the current item's last P V;
// with one (ForwardTraits says where), it is loaded once the current item's last S has landed.
template <int kStages, int kCleanerWarps, int kQSlots>
struct ForwardBarriers {
    WorkSlot work_slots[kWorkSlots];
    uint64_t work_ready[kWorkSlots];  // the slot described: the value loader's signal, ahead of Q
    uint64_t work_free[kWorkSlots];   // one arrival per consumer warp, and by the value loader
    uint64_t q_full[kQSlots];         // also publishes the item's work slot
    // One arrival per consumer warp after its last Q K^T of a work item, and per cleaner warp once
    // it has read the work slot: the cleaners run behind the consumers, and without theirs the
    // producer could complete q_full twice more (two more items' Q) before a cleaner waits on it,
    // and a parity wait cannot tell that from none.
    uint64_t q_empty[kQSlots];
    uint64_t key_full[kStages];
    uint64_t key_empty[kStages];  // one arrival per consumer warp
    uint64_t value_full[kStages];
    uint64_t value_clean[kStages];  // one arrival per cleaner warp, every tile (masked or not)
    uint64_t value_empty[kStages];  // one arrival per consumer and per cleaner warp
    uint32_t value_nonfinite[kStages][kCleanerWarps];  // a cleaner warp replaced something in V
};

// Warpgroups of 64 query rows. D=64 takes three (192-row tiles) where it can: its tiles' products
// are short next to their softmax, and a third group keeps more tensor work in flight to hide it;
// run_forward takes two where the mask would waste too much of 192-row tiles.
template <int kHeadDim_, typename Element_, int kConsumers_ = (kHeadDim_ <= 64 ? 3 : 2),
          bool kLateValuesWait_ = kHeadDim_ == 128, int kBlockN_ = 128>
struct ForwardTraits {
    using Element = Element_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kConsumers = kConsumers_;
    static constexpr int kBlockM = 64 * kConsumers;
    // 128 keys, or 160 for long rows at D=128 (run_forward picks): 25% more products per step for
    // the same per-step bookkeeping, and S (80 registers), P (40) and O (64) still fit the
    // consumers' 240 without spills in the loop.
    static constexpr int kBlockN = kBlockN_;
    // Two Q slots, except beside 160-key stages: two Q slots, two K and two V stages of 160 keys
    // and the O tiles would take 256 KB, over the 227 KB a block can have.
    static constexpr int kQSlots = kBlockN == 128 ? 2 : 1;
    static constexpr int kThreads = 128 * (1 + kConsumers);
    static constexpr int kConsumerThreads = 128 * kConsumers;
    // Whether a group waits for its previous P V after its softmax (forward v14) rather than
    // where ptxas would hoist the wait (above the exponentials). That releases each V stage a
    // softmax later, so V gets its own loader thread (load_values), whose late refills hold up no K
    // load; the producer warpgroup's last warp is then the loader instead of a cleaner. At D=128
    // +2-5% (N=4k causal +0.5%), but -2-6% where masks cut many tiles (run_forward picks); at D=64
    // it lost up to 6% (bench/NOTES.md, forward v14).
    static constexpr bool kLateValuesWait = kLateValuesWait_;
    static constexpr bool kValueLoader = kLateValuesWait;
    static constexpr int kCleanerWarps = kValueLoader ? 2 : 3;  // warps 1 .. kCleanerWarps
    // Two. Three at D=64 lost up to 4% at N=16k and gained nothing elsewhere, with and without the
    // value loader (bench/NOTES.md, thirteenth session).
    static constexpr int kStages = 2;
    // setmaxnreg moves registers from the producer to the consumers within what the block got at
    // launch (the per-thread cap of __launch_bounds__(kThreads, 1), in steps of 8): 168 x 384 or
    // 128 x 512. If the consumers asked for more than the producer freed, their setmaxnreg.inc would
    // wait forever (a first version asked for 32 + 2 x 240 and hung), so the consumers get what the
    // producer warpgroup leaves. That warpgroup (the producer thread's scheduling arithmetic and the
    // cleaners) takes 32 beside three groups (160 each); beside two groups with 128-key tiles 56
    // (224 each: the consumers' loop fits as it fit 240, and neither role spills at the item
    // boundary, where at 24 the producer reloaded its state and ptxas spilled the consumers' too);
    // beside 160-key tiles 24, as they need 240 (S, P and O take 184).
    static constexpr int kLaunchRegisters = 65536 / kThreads / 8 * 8;
    static constexpr int kProducerRegisters = kConsumers == 3 ? 32 : kBlockN == 128 ? 56 : 24;
    static constexpr int kConsumerRegisters =
        ((1 + kConsumers) * kLaunchRegisters - kProducerRegisters) / kConsumers / 8 * 8;
    static_assert(kProducerRegisters + kConsumers * kConsumerRegisters <= (1 + kConsumers) * kLaunchRegisters,
                  "setmaxnreg can only redistribute the registers the block was launched with");
    // fwd_softmax.cuh's per-warp view: each warp of a consumer group owns one 16-row tile.
    static constexpr int kMTiles = 1;
    static constexpr int kSTiles = kBlockN / 8;
    static constexpr int kOTiles = kHeadDim / 8;
    // The group index as a warp-uniform value (warpgroup_index): at D=64 its Q descriptors stay in
    // uniform registers, +1-2%; at D=128 it cost up to 5% on short rows (more spills at the item
    // boundary). bench/NOTES.md.
    static constexpr bool kUniformWarpgroup = kHeadDim == 64;

    using QTile = SwizzledTile<kBlockM, kHeadDim>;
    using KVTile = SwizzledTile<kBlockN, kHeadDim>;
    using OTile = SwizzledTile<64, kHeadDim>;  // a group's O rows, staged for their TMA store
    static constexpr uint32_t kKOffset = kQSlots * QTile::kBytes;
    static constexpr uint32_t kVOffset = kKOffset + kStages * KVTile::kBytes;
    static constexpr uint32_t kOOffset = kVOffset + kStages * KVTile::kBytes;
    static constexpr uint32_t kBarrierOffset = kOOffset + kConsumers * OTile::kBytes;
    using Barriers = ForwardBarriers<kStages, kCleanerWarps, kQSlots>;
    // + 1024: the dynamic shared memory is aligned up to a swizzle atom in the kernel.
    static constexpr int kSharedBytes = static_cast<int>(kBarrierOffset + sizeof(Barriers) + 1024);
    static_assert(kHeadDim == 64 || kHeadDim == 128, "wgmma shapes instantiated in sm90.cuh");
    static_assert(kBlockN == 128 || (kBlockN == 160 && kHeadDim == 128), "wgmma shapes instantiated in sm90.cuh");
};

// Work items (query tiles of kBlockM rows, numbered as tile::query_tile_block numbers them).
FATTN_HOST_DEVICE int64_t work_items(const AttnParams& params, int block_rows) {
    return (params.seqlen_q + block_rows - 1) / block_rows * params.heads_q * params.batch;
}

// The key tile of a work item's step (0 .. key_tiles - 1), for the producer, the cleaners and the
// consumers alike. First tile first: the tiles a mask cuts (the diagonal, the sequence end) come
// at the item's end, so that their masking and the previous item's end (written in the item's
// first step) fall in different steps, each behind the other groups' products (bench/NOTES.md,
// forward v12).
template <typename Index>
__device__ __forceinline__ Index step_key_tile(Index first_key_tile, Index step) {
    return first_key_tile + step;
}

// One K or V tile (key tile `key_tile` of a KV head) into its stage, once the stage's previous
// tile has been released (`empty`, in the ring's phase); the copy completes `full`.
template <class Traits>
__device__ __forceinline__ void load_key_tile(uint64_t& empty, uint64_t& full, unsigned char* stage_tile,
                                              uint32_t phase, const CUtensorMap* map, int64_t key_tile,
                                              int32_t kv_head, int32_t batch) {
    using KVTile = typename Traits::KVTile;
    const auto key0 = static_cast<int32_t>(key_tile * Traits::kBlockN);
    mbarrier_wait(&empty, phase ^ 1);
    mbarrier_arrive_expect_bytes(&full, KVTile::kBytes);
#pragma unroll
    for (int block = 0; block < Traits::kHeadDim / 64; ++block)
        tma_load_4d(stage_tile + block * KVTile::kBlockBytes, map, &full, block * 64, key0, kv_head, batch);
}

// The producer thread. Persistent blocks take work items dynamically: block b starts with item b,
// then claims gridDim.x + atomicAdd(next_item_counter, 1), so blocks that drew short (masked)
// items take more of them and the longest items, numbered first, start first. For each item:
// describe it in its work slot (work_ready hands it to a value loader) and hand that to the
// consumers with Q (q_full), then K and V (or K only, beside a value loader) of every visible key
// tile in step order. The next item is claimed, described and its Q loaded `claim_ahead` key
// tiles before the current item's end, or right after its first key tile if it has fewer
// (claim_distance says which): with two Q slots its slot is free by then (the item before the
// current one has had its last S), and Q, read from DRAM, lands ahead of its first S instead of the
// two tiles the stage ring runs ahead; with one, the claim follows the item's last K tile and its Q
// waits for that tile's S. `iteration` counts key tiles over all items, so the stage ring runs on
// across items and the next item's tiles load during this one's end.
template <class Traits>
__device__ __forceinline__ void produce_tiles(typename Traits::Barriers& barriers, unsigned char* shared,
                                              const AttnParams& params, int claim_ahead, int* next_item_counter,
                                              const CUtensorMap* q_map, const CUtensorMap* k_map,
                                              const CUtensorMap* v_map) {
    using KVTile = typename Traits::KVTile;
    constexpr int kColumnBlocks = Traits::kHeadDim / 64;
    prefetch_tensor_map(q_map);
    prefetch_tensor_map(k_map);
    if constexpr (!Traits::kValueLoader) prefetch_tensor_map(v_map);
    const int64_t items = work_items(params, Traits::kBlockM);
    int64_t item = blockIdx.x;
    // Describes `item` as the item of `item_round` and loads its Q, or marks the block's work
    // done (the slot is published by the arrive on q_full); returns whether there was an item.
    const auto start_item = [&](uint32_t item_round) {
        const uint32_t slot = item_round % Traits::kQSlots;
        const uint32_t slot_phase = (item_round / Traits::kQSlots) & 1;
        WorkSlot& described = barriers.work_slots[item_round % kWorkSlots];
        mbarrier_wait(&barriers.work_free[item_round % kWorkSlots], ((item_round / kWorkSlots) & 1) ^ 1);
        described.done = item >= items;
        if (described.done) {
            if constexpr (Traits::kValueLoader) mbarrier_arrive(&barriers.work_ready[item_round % kWorkSlots]);
            // The done marker completes q_full too, so like a Q load it first waits until every
            // reader has passed the slot's previous phase: a phase completed twice ahead of a
            // waiter (a cleaner warp running late) leaves its parity wait hanging.
            mbarrier_wait(&barriers.q_empty[slot], slot_phase ^ 1);
            mbarrier_arrive(&barriers.q_full[slot]);
            return false;
        }
        const tile::QueryTileBlock work = tile::query_tile_block<Traits::kBlockM, Traits::kBlockN>(params, item);
        described.work = work;
        if constexpr (Traits::kValueLoader) mbarrier_arrive(&barriers.work_ready[item_round % kWorkSlots]);
        mbarrier_wait(&barriers.q_empty[slot], slot_phase ^ 1);
        mbarrier_arrive_expect_bytes(&barriers.q_full[slot], Traits::QTile::kBytes);
#pragma unroll
        for (int block = 0; block < kColumnBlocks; ++block)
            tma_load_4d(shared + slot * Traits::QTile::kBytes + block * Traits::QTile::kBlockBytes, q_map,
                        &barriers.q_full[slot], block * 64, static_cast<int32_t>(work.row0),
                        static_cast<int32_t>(work.head), static_cast<int32_t>(work.batch));
        item = gridDim.x + atomicAdd(next_item_counter, 1);
        return true;
    };

    uint32_t iteration = 0;
    if (!start_item(0)) return;
    for (uint32_t item_round = 0;; ++item_round) {
        const tile::QueryTileBlock& work = barriers.work_slots[item_round % kWorkSlots].work;
        const auto batch = static_cast<int32_t>(work.batch);
        const auto kv_head = static_cast<int32_t>(work.kv_head);
        const int64_t key_tiles = work.key_tiles;
        bool next_started = false;  // the next item described (its Q loading), or the work done
        bool more = false;          // whether there is a next item
        const int64_t claim_step = std::max<int64_t>(key_tiles - claim_ahead, 0);
        for (int64_t i = 0; i < key_tiles; ++i, ++iteration) {
            const int stage = static_cast<int>(iteration % Traits::kStages);
            const uint32_t phase = (iteration / Traits::kStages) & 1;
            const int64_t key_tile = step_key_tile(work.first_key_tile, i);
            load_key_tile<Traits>(barriers.key_empty[stage], barriers.key_full[stage],
                                  shared + Traits::kKOffset + stage * KVTile::kBytes, phase, k_map, key_tile,
                                  kv_head, batch);
            if constexpr (!Traits::kValueLoader)
                load_key_tile<Traits>(barriers.value_empty[stage], barriers.value_full[stage],
                                      shared + Traits::kVOffset + stage * KVTile::kBytes, phase, v_map, key_tile,
                                      kv_head, batch);
            if (i == claim_step) {
                more = start_item(item_round + 1);
                next_started = true;
            }
        }
        if (!next_started) more = start_item(item_round + 1);
        if (!more) return;
    }
}

// The value loader thread: item by item as the producer describes them, each visible V tile into
// the value ring, apart from K so that a V stage released late (after its P V, at the end of a
// softmax) holds up no K load behind it.
template <class Traits>
__device__ __forceinline__ void load_values(typename Traits::Barriers& barriers, unsigned char* shared,
                                            const CUtensorMap* v_map) {
    using KVTile = typename Traits::KVTile;
    prefetch_tensor_map(v_map);
    uint32_t iteration = 0;
    for (uint32_t item_round = 0;; ++item_round) {
        mbarrier_wait(&barriers.work_ready[item_round % kWorkSlots], (item_round / kWorkSlots) & 1);
        const WorkSlot& described = barriers.work_slots[item_round % kWorkSlots];
        if (described.done) return;
        const tile::QueryTileBlock work = described.work;
        mbarrier_arrive(&barriers.work_free[item_round % kWorkSlots]);
        const auto batch = static_cast<int32_t>(work.batch);
        const auto kv_head = static_cast<int32_t>(work.kv_head);
        for (int64_t i = 0; i < work.key_tiles; ++i, ++iteration) {
            const int stage = static_cast<int>(iteration % Traits::kStages);
            load_key_tile<Traits>(barriers.value_empty[stage], barriers.value_full[stage],
                                  shared + Traits::kVOffset + stage * KVTile::kBytes,
                                  (iteration / Traits::kStages) & 1, v_map, step_key_tile(work.first_key_tile, i),
                                  kv_head, batch);
        }
    }
}

// Whether the block's rows see only part of the key tile at key0 (the same decision for the
// producer warpgroup's cleaners, for every consumer group, and for run_forward's count of such
// tiles on the host).
template <class Traits>
FATTN_HOST_DEVICE bool tile_masked(const AttnParams& params, int64_t row0, int rows, int64_t key0) {
    return !params.mask.tile_fully_visible(row0, row0 + rows, key0, key0 + Traits::kBlockN);
}

// The cleaner warps (`thread` 0 .. 32 * kCleanerWarps - 1): item by item, tile by tile as the
// consumers walk them, wait for V; a masked tile's NaNs and infinities become 0 (shared by the
// warps), each warp publishes whether it replaced any, then all arrive on the stage's clean and
// empty barriers. Arriving on every tile keeps the barriers' phases those of the stage ring.
template <class Traits>
__device__ __forceinline__ void clean_values(typename Traits::Barriers& barriers, unsigned char* shared,
                                             const AttnParams& params, int thread) {
    using KVTile = typename Traits::KVTile;
    constexpr int kCleanerThreads = 32 * Traits::kCleanerWarps;
    const int warp = thread / 32;
    const int lane = thread % 32;
    uint32_t iteration = 0;
    for (uint32_t item_round = 0;; ++item_round) {
        mbarrier_wait(&barriers.q_full[item_round % Traits::kQSlots], (item_round / Traits::kQSlots) & 1);
        const WorkSlot& described = barriers.work_slots[item_round % kWorkSlots];
        if (described.done) return;
        const tile::QueryTileBlock work = described.work;
        warp_arrive(&barriers.q_empty[item_round % Traits::kQSlots], lane);
        for (int64_t i = 0; i < work.key_tiles; ++i, ++iteration) {
            const int stage = static_cast<int>(iteration % Traits::kStages);
            mbarrier_wait(&barriers.value_full[stage], (iteration / Traits::kStages) & 1);
            bool replaced = false;
            const int64_t key0 = step_key_tile(work.first_key_tile, i) * Traits::kBlockN;
            if (tile_masked<Traits>(params, work.row0, work.rows, key0))
                replaced = zero_nonfinite_tile<typename Traits::Element, KVTile::kBytes, kCleanerThreads>(
                    shared + Traits::kVOffset + stage * KVTile::kBytes, thread);
            replaced = __any_sync(0xffffffffu, replaced);
            if (lane == 0) {
                barriers.value_nonfinite[stage][warp] = replaced;
                mbarrier_arrive(&barriers.value_clean[stage]);
                mbarrier_arrive(&barriers.value_empty[stage]);
            }
        }
    }
}

// One consumer warpgroup's view of the shared stages and barriers, and its share of the work.
template <class Traits>
struct Consumer {
    using Element = typename Traits::Element;
    using KVTile = typename Traits::KVTile;
    static constexpr int kBlockN = Traits::kBlockN;

    static constexpr int kTurnBarrier = 1;  // named barrier kTurnBarrier + group is a group's turn
    // Named barrier kOutputBarrier + group: the group's O tile free (the previous item's store has
    // read it), then written. Every thread waits at both: with the warps that do not issue the
    // store only arriving, three groups' consumers spill in their key loop.
    static constexpr int kOutputBarrier = kTurnBarrier + Traits::kConsumers;

    typename Traits::Barriers& barriers;
    unsigned char* shared;
    int group;
    uint32_t q_base;  // this group's 64 rows of Q in slot 0
    int thread;       // 0 .. kConsumerThreads - 1 over all groups
    int lane;

    // The first query row of this warp's 16 in a work item starting at row0.
    __device__ __forceinline__ int64_t warp_row0(int64_t row0) const {
        return row0 + group * 64 + (thread / 32 % 4) * 16;
    }

    // S = Q K^T for the key tile in `stage` and the Q in `q_slot`, issued (the caller waits).
    __device__ __forceinline__ void issue_scores(float (&s)[1][Traits::kSTiles][4], int stage, uint32_t q_slot) const {
        float(&flat)[kBlockN / 2] = reinterpret_cast<float(&)[kBlockN / 2]>(s);
        const uint32_t q_slot_base = q_base + q_slot * Traits::QTile::kBytes;
        const uint32_t k_base = ptx::smem_address(shared) + Traits::kKOffset + stage * KVTile::kBytes;
        wgmma_fence();
#pragma unroll
        for (int k_step = 0; k_step < Traits::kHeadDim / 16; ++k_step)
            Wgmma<kBlockN, Element>::ss(flat, Traits::QTile::k_major(q_slot_base, 0, k_step),
                                        KVTile::k_major(k_base, 0, k_step), k_step > 0);
        wgmma_commit();
    }

    // Waits for the value tile in `stage`, and for a masked tile until the cleaners have replaced
    // its NaNs and infinities by 0; returns whether they replaced any (add_nonfinite_values then
    // adds them back).
    __device__ __forceinline__ bool prepare_values(int stage, uint32_t phase, bool masked) const {
        mbarrier_wait(&barriers.value_full[stage], phase);
        if (!masked) return false;
        mbarrier_wait(&barriers.value_clean[stage], phase);
        bool replaced = false;
#pragma unroll
        for (int warp = 0; warp < Traits::kCleanerWarps; ++warp) replaced |= barriers.value_nonfinite[stage][warp] != 0;
        return replaced;
    }

    // O = P V (O += P V when accumulate) for the value tile in `stage`, issued (the caller waits).
    __device__ __forceinline__ void issue_values(float (&o)[Traits::kHeadDim / 2],
                                                 const uint32_t (&p)[kBlockN / 16][4], int stage,
                                                 bool accumulate) const {
        const uint32_t v_base = ptx::smem_address(shared) + Traits::kVOffset + stage * KVTile::kBytes;
        wgmma_fence();
#pragma unroll
        for (int k_step = 0; k_step < kBlockN / 16; ++k_step)
            Wgmma<Traits::kHeadDim, Element>::rs_mn(o, p[k_step], KVTile::mn_major(v_base, k_step),
                                                    accumulate || k_step > 0);
        wgmma_commit();
    }

    // The groups take turns, in a ring, issuing their wgmmas (FlashAttention-3's ping-pong), so one
    // group's softmax runs while another's products keep the tensor cores busy. Each turn's barrier
    // counts its group (sync) and the previous group (arrive). Group 0 goes first.
    static constexpr int kTurnThreads = 256;
    __device__ __forceinline__ void start_turns() const {
        if (group == Traits::kConsumers - 1) named_barrier_arrive(kTurnBarrier, kTurnThreads);
    }
    __device__ __forceinline__ void take_turn() const { named_barrier_sync(kTurnBarrier + group, kTurnThreads); }
    __device__ __forceinline__ void pass_turn() const {
        named_barrier_arrive(kTurnBarrier + (group + 1) % Traits::kConsumers, kTurnThreads);
    }

    __device__ __forceinline__ void release(uint64_t& empty) const { warp_arrive(&empty, lane); }

    // This thread's rows of a work item: lse from registers, O / rowsum through the group's O tile
    // to one TMA store per 64 columns, which skips rows past seqlen_q and columns past head_dim
    // (zeros and -inf for a row that saw no key). The store leaves the consumers' path at once,
    // where per-thread global stores held it up on their addresses and spilled row state.
    __device__ __forceinline__ void write_rows(const AttnParams& params, const CUtensorMap& o_map,
                                               const tile::QueryTileBlock& work,
                                               const float (&o)[Traits::kOTiles][4], const float (&row_max)[2],
                                               const float (&row_sum)[2]) const {
        using OTile = typename Traits::OTile;
        const int group_thread = thread % 128;
        if (group_thread == 0) bulk_wait_read<0>();
        named_barrier_sync(kOutputBarrier + group, 128);
        float* lse = static_cast<float*>(params.lse.data);
        unsigned char* const o_tile = shared + Traits::kOOffset + group * OTile::kBytes;
        const uint32_t first = OTile::element_offset(group_thread / 32 * 16 + lane / 4, (lane % 4) * 2);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const RowEnd end = finish_row(row_max[half], row_sum[half], params.scale);
#pragma unroll
            for (int ot = 0; ot < Traits::kOTiles; ++ot)
                *reinterpret_cast<uint32_t*>(o_tile + OTile::fragment_offset(first + half * 8 * 128, ot)) =
                    ptx::pack2<Element>(o[ot][half * 2] * end.inverse, o[ot][half * 2 + 1] * end.inverse);
            const int64_t row = warp_row0(work.row0) + lane / 4 + half * 8;
            if (lse != nullptr && lane % 4 == 0 && row < params.seqlen_q)
                lse[params.lse.offset(work.batch, work.head, row)] = end.lse;
        }
        fence_async_shared();  // the tile's next reader is the TMA store
        named_barrier_sync(kOutputBarrier + group, 128);
        if (group_thread == 0) {
#pragma unroll
            for (int block = 0; block < Traits::kHeadDim / 64; ++block)
                tma_store_4d(&o_map, o_tile + block * OTile::kBlockBytes, block * 64,
                             static_cast<int32_t>(work.row0 + group * 64), static_cast<int32_t>(work.head),
                             static_cast<int32_t>(work.batch));
            bulk_commit();
        }
    }

    // The group's last O store has completed, before the block's shared memory goes.
    __device__ __forceinline__ void finish_stores() const {
        if (thread % 128 == 0) bulk_wait_all();
    }

    // The end of the work item of `item_round` once its last P V has landed: a masked tile's
    // non-finite values added back (clean_values), then the rows written and the work slot freed.
    __device__ __forceinline__ void finish_item(const AttnParams& params, const CUtensorMap& o_map, uint32_t item_round,
                                                ForwardAccumulators<Traits>& acc, const float (&row_max)[2],
                                                const float (&row_sum)[2], bool nonfinite_values) const {
        const tile::QueryTileBlock work = barriers.work_slots[item_round % kWorkSlots].work;
        if (nonfinite_values) {
            const Element* v =
                static_cast<const Element*>(params.v.data) + params.v.offset(work.batch, work.kv_head, 0);
            add_nonfinite_values<Traits>(acc, v, params.v.row_stride, params.mask.block_key_begin(work.row0),
                                         params.mask.block_key_end(work.row0 + work.rows),
                                         static_cast<int>(params.head_dim), params.mask, warp_row0(work.row0), lane);
        }
        write_rows(params, o_map, work, acc.o[0], row_max, row_sum);
        release(barriers.work_free[item_round % kWorkSlots]);
    }
};

template <class Traits>
__device__ __forceinline__ void scores_to_operand(uint32_t (&p)[Traits::kBlockN / 16][4],
                                                  const float (&s)[1][Traits::kSTiles][4]) {
#pragma unroll
    for (int k_step = 0; k_step < Traits::kBlockN / 16; ++k_step)
        tile::accumulators_to_a<typename Traits::Element>(p[k_step], s[0][2 * k_step], s[0][2 * k_step + 1]);
}

template <int N>
__device__ __forceinline__ void keep_operands(uint32_t (&p)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(p[i][j])::"memory");
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    forward_kernel(const __grid_constant__ AttnParams params, int claim_ahead, int* next_item_counter,
                   const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                   const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap o_map) {
#if FATTN_SM90_ENABLED
    using Element = typename Traits::Element;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kStages = Traits::kStages;

    extern __shared__ unsigned char shared_unaligned[];
    unsigned char* shared = shared_unaligned + (1024 - ptx::smem_address(shared_unaligned) % 1024) % 1024;
    auto& barriers = *reinterpret_cast<typename Traits::Barriers*>(shared + Traits::kBarrierOffset);
    const int warpgroup = warpgroup_index<Traits::kUniformWarpgroup>();

    if (threadIdx.x == 0) {
        constexpr uint32_t kConsumerWarps = Traits::kConsumerThreads / 32;
        constexpr uint32_t kCleanerWarps = Traits::kCleanerWarps;
        for (int slot = 0; slot < kWorkSlots; ++slot) {
            mbarrier_init(&barriers.work_ready[slot], 1);
            mbarrier_init(&barriers.work_free[slot], kConsumerWarps + (Traits::kValueLoader ? 1 : 0));
        }
        for (int slot = 0; slot < Traits::kQSlots; ++slot) {
            mbarrier_init(&barriers.q_full[slot], 1);
            mbarrier_init(&barriers.q_empty[slot], kConsumerWarps + kCleanerWarps);
        }
        for (int stage = 0; stage < kStages; ++stage) {
            mbarrier_init(&barriers.key_full[stage], 1);
            mbarrier_init(&barriers.value_full[stage], 1);
            mbarrier_init(&barriers.value_clean[stage], kCleanerWarps);
            mbarrier_init(&barriers.key_empty[stage], kConsumerWarps);
            mbarrier_init(&barriers.value_empty[stage], kConsumerWarps + kCleanerWarps);
        }
        mbarrier_init_fence();
    }
    __syncthreads();

    if (warpgroup == 0) {
        lower_registers<Traits::kProducerRegisters>();
        const int warp = static_cast<int>(threadIdx.x) / 32;
        if (threadIdx.x == 0) {
            produce_tiles<Traits>(barriers, shared, params, claim_ahead, next_item_counter, &q_map, &k_map, &v_map);
        } else if (warp >= 1 && warp <= Traits::kCleanerWarps) {
            clean_values<Traits>(barriers, shared, params, static_cast<int>(threadIdx.x) - 32);
        } else if constexpr (Traits::kValueLoader) {
            if (threadIdx.x == 32 * (Traits::kCleanerWarps + 1)) load_values<Traits>(barriers, shared, &v_map);
        }
        return;
    }
    raise_registers<Traits::kConsumerRegisters>();

    const int group = warpgroup - 1;
    const Consumer<Traits> consumer{barriers, shared, group, ptx::smem_address(shared) + group * 64 * 128,
                                    static_cast<int>(threadIdx.x) - 128, static_cast<int>(threadIdx.x) % 32};
    consumer.start_turns();
    uint32_t iteration = 0;  // key tiles over all work items: the stage ring's position
    // The current work item as the loop uses it. Key tiles fit int (TMA coordinates are int):
    // int64 bookkeeping would cost the loop registers it does not have.
    int64_t row0 = 0;
    int rows = 0;
    int first_key_tile = 0;
    int key_tiles = 0;

    ForwardAccumulators<Traits> acc;
    float(&o)[Traits::kHeadDim / 2] = reinterpret_cast<float(&)[Traits::kHeadDim / 2]>(acc.o);
    const auto clear_output = [&] {
#pragma unroll
        for (int j = 0; j < Traits::kHeadDim / 2; ++j) o[j] = 0.0f;
    };
    const auto start_rows = [&] {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            acc.row_max[0][half] = -INFINITY;
            acc.row_sum[0][half] = 0.0f;
        }
    };
    bool nonfinite_values = false;  // a masked tile of the item whose P V runs held a NaN or infinity in V
    // The next P V is its item's first: it overwrites O (wgmma's scale-d 0) instead of adding to the
    // previous item's, which saves clearing O's registers at every item boundary.
    bool first_values = false;

    // Software pipeline over the key tiles of all the block's work items: tile i's S = Q K^T is
    // issued with tile i - 1's P V, and tile i's softmax runs while that P V is in flight; O is
    // rescaled after it lands. An item's first tile takes that place after the previous item's
    // last one, whose rows are written once its P V has landed. The block's first tile is peeled
    // off so the loop's wgmma waits are the same on every pass (ptxas serializes the pipeline
    // otherwise).
    uint32_t p[kBlockN / 16][4];
    bool previous_masked = false;
    int previous_stage = 0;
    uint32_t q_slot = 0;
    // Tile i's S, after its wgmmas completed: releases K (and Q after the item's last tile), masks
    // it and runs the softmax's first step. Returns {masked, O needs rescaling}.
    const auto softmax_scores = [&](int i, int stage, float(&s)[1][Traits::kSTiles][4],
                                    float(&corrections)[1][2]) {
        fence_accumulators(reinterpret_cast<float(&)[kBlockN / 2]>(s));
        consumer.release(barriers.key_empty[stage]);
        if (i == key_tiles - 1) consumer.release(barriers.q_empty[q_slot]);
        const int64_t key0 = static_cast<int64_t>(step_key_tile(first_key_tile, i)) * kBlockN;
        const bool masked = tile_masked<Traits>(params, row0, rows, key0);
        if (masked) mask_scores<Traits>(s, params.mask, consumer.warp_row0(row0), key0, consumer.lane);
        const bool rescale = softmax_update<Traits>(s, acc, params.scale_log2, corrections);
        return std::pair<bool, bool>{masked, rescale};
    };
    const auto finish_previous_values = [&] {
        wgmma_wait<0>();
        fence_accumulators(o);
        keep_operands(p);
        consumer.release(barriers.value_empty[previous_stage]);
    };
    const auto prepare_previous_values = [&] {
        nonfinite_values |=
            consumer.prepare_values(previous_stage, ((iteration - 1) / kStages) & 1, previous_masked);
    };
    // One pass: tile i's S = Q K^T with the previous tile's P V. At an item's start (kItemStart)
    // the previous tile is the last of the item of `finished_round`, whose rows are written once
    // it has landed.
    const auto pipelined_step = [&](int i, auto item_start, uint32_t finished_round) {
        constexpr bool kItemStart = decltype(item_start)::value;
        const int stage = static_cast<int>(iteration % kStages);
        float s[1][Traits::kSTiles][4];
        float corrections[1][2];
        mbarrier_wait(&barriers.key_full[stage], (iteration / kStages) & 1);
        prepare_previous_values();
        consumer.take_turn();
        consumer.issue_scores(s, stage, q_slot);
        consumer.issue_values(o, p, previous_stage, !first_values);
        first_values = false;
        consumer.pass_turn();
        wgmma_wait<1>();
        float finished_max[2], finished_sum[2];  // the finished item's row state; the new item starts afresh
        if constexpr (kItemStart) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                finished_max[half] = acc.row_max[0][half];
                finished_sum[half] = acc.row_sum[0][half];
            }
            start_rows();
        }
        const auto [masked, rescale] = softmax_scores(i, stage, s, corrections);
        if constexpr (kItemStart) {
            finish_previous_values();
            scores_to_operand<Traits>(p, s);
            consumer.finish_item(params, o_map, finished_round, acc, finished_max, finished_sum, nonfinite_values);
            nonfinite_values = false;
            first_values = true;
        } else if constexpr (Traits::kLateValuesWait) {
            // The wait in both arms of the softmax's vote: written once after the softmax, ptxas
            // hoists it above the exponentials (bench/sass_order.py shows where it went).
            if (rescale) {
                finish_previous_values();
                rescale_output<Traits>(acc, corrections);
            } else {
                finish_previous_values();
            }
            scores_to_operand<Traits>(p, s);
        } else {
            finish_previous_values();
            if (rescale) rescale_output<Traits>(acc, corrections);
            scores_to_operand<Traits>(p, s);
        }
        previous_masked = masked;
        previous_stage = stage;
        ++iteration;
    };

    // The steps after the first of an item whose rows are all past the sequence end for this group
    // (the last query tile of a head, when seqlen_q leaves the group's 64 rows empty): its products
    // are not needed, so the group keeps only the barriers and the turns in step, and the other
    // groups' products run without its own between them. The item stays the pending one: its last
    // P V (on whatever P holds) goes with the next item's first S, as any item's does, and its
    // rows, all past the sequence end, are not stored. A release counts toward the stage's current
    // phase, so each waits for its tile to have landed (which follows every release of the stage's
    // previous tile); the last tile's V is held for that P V.
    const auto pass_steps = [&] {
        for (int i = 1; i < key_tiles; ++i) {
            const int stage = static_cast<int>(iteration % kStages);
            mbarrier_wait(&barriers.key_full[stage], (iteration / kStages) & 1);
            consumer.take_turn();
            consumer.pass_turn();
            consumer.release(barriers.key_empty[stage]);
            if (i == key_tiles - 1) consumer.release(barriers.q_empty[q_slot]);
            mbarrier_wait(&barriers.value_full[previous_stage], ((iteration - 1) / kStages) & 1);
            consumer.release(barriers.value_empty[previous_stage]);
            previous_masked = false;
            previous_stage = stage;
            ++iteration;
        }
    };

    constexpr uint32_t kNone = 0xffffffffu;
    uint32_t pending_round = kNone;  // the round of the item whose last P V is still to be issued
    for (uint32_t item_round = 0;; ++item_round) {
        q_slot = item_round % Traits::kQSlots;
        mbarrier_wait(&barriers.q_full[q_slot], (item_round / Traits::kQSlots) & 1);
        const WorkSlot& described = barriers.work_slots[item_round % kWorkSlots];
        if (described.done) break;
        if (described.work.key_tiles == 0) {  // rows before a window, or no keys at all: zeros and -inf
            consumer.release(barriers.q_empty[q_slot]);
            const float zeros[Traits::kOTiles][4] = {};
            const float no_max[2] = {-INFINITY, -INFINITY};
            const float no_sum[2] = {0.0f, 0.0f};
            consumer.write_rows(params, o_map, described.work, zeros, no_max, no_sum);
            consumer.release(barriers.work_free[item_round % kWorkSlots]);
            continue;
        }
        row0 = described.work.row0;
        rows = described.work.rows;
        key_tiles = static_cast<int>(described.work.key_tiles);
        first_key_tile = static_cast<int>(described.work.first_key_tile);
        if (pending_round != kNone) {
            pipelined_step(0, std::true_type{}, pending_round);
        } else {  // the block's first tile
            const int stage = static_cast<int>(iteration % kStages);
            float s[1][Traits::kSTiles][4];
            float corrections[1][2];  // O is still 0: nothing to rescale
            clear_output();
            start_rows();
            mbarrier_wait(&barriers.key_full[stage], (iteration / kStages) & 1);
            consumer.take_turn();
            consumer.issue_scores(s, stage, q_slot);
            consumer.pass_turn();
            wgmma_wait<0>();
            previous_masked = softmax_scores(0, stage, s, corrections).first;
            scores_to_operand<Traits>(p, s);
            previous_stage = stage;
            ++iteration;
        }
        pending_round = item_round;
        // Warp-uniform (a shuffle from lane 0), or ptxas takes the branch as divergent and spills at
        // the item start (80 bytes at D=128, 0 with the shuffle).
        if (__shfl_sync(0xffffffffu, rows <= group * 64, 0)) {
            pass_steps();
            continue;
        }
        for (int i = 1; i < key_tiles; ++i) pipelined_step(i, std::false_type{}, item_round);
    }
    if (pending_round != kNone) {
        prepare_previous_values();
        consumer.take_turn();
        consumer.issue_values(o, p, previous_stage, !first_values);
        first_values = false;
        consumer.pass_turn();
        finish_previous_values();
        consumer.finish_item(params, o_map, pending_round, acc, acc.row_max[0], acc.row_sum[0], nonfinite_values);
    }
    consumer.finish_stores();
#endif
}

// One head's work items under these traits, counted on the host for the launch's choices.
struct ItemTiles {
    int64_t items = 0;
    int64_t tiles = 0;   // visible key tiles over all items
    bool alike = true;   // every item has as many
};
template <class Traits>
ItemTiles item_tiles(const AttnParams& params) {
    ItemTiles counts;
    int64_t first = -1;
    for (int64_t row0 = 0; row0 < params.seqlen_q; row0 += Traits::kBlockM, ++counts.items) {
        const int64_t rows = std::min<int64_t>(Traits::kBlockM, params.seqlen_q - row0);
        const int64_t count = tile::visible_key_tiles<Traits::kBlockN>(params.mask, row0, rows).count;
        if (first < 0) first = count;
        counts.alike = counts.alike && count == first;
        counts.tiles += count;
    }
    return counts;
}

// How many key tiles before the end of its current item the producer claims the next one. Where
// the items differ in length (causal rows, windows: numbered longest first) and are long, late (2),
// so that the blocks' last and shortest claims go to the blocks that finish first: D=128 N=16k
// causal +3.9%, N=4k causal +2.1%, D=64 N=16k causal +1.9%. Where all items are alike there is
// nothing to balance, and short items need their Q early: right after the first key tile (late
// claims lost 1.5% at D=128 N=1k and 5.5% at D=64 N=1k). bench/NOTES.md, forward v15. With one Q
// slot there is no choice: the slot is free only once the current item's last S has landed, which
// needs its last K tile, so the claim follows that tile's load (1).
template <class Traits>
int claim_distance(const AttnParams& params) {
    if constexpr (Traits::kQSlots == 1) return 1;
    constexpr int kLongItem = 8;  // key tiles, on average; N=1k causal averages 4-5
    const ItemTiles counts = item_tiles<Traits>(params);
    return !counts.alike && counts.tiles >= kLongItem * counts.items ? 2 : std::numeric_limits<int>::max();
}

template <class Traits>
void launch_forward_kernel(const AttnParams& params, void* workspace, const cudaDeviceProp& device,
                           cudaStream_t stream) {
    constexpr auto kernel = forward_kernel<Traits>;
    require_shared_memory(Traits::kSharedBytes, device, params, "Hopper forward kernel");
    // Persistent: one block per SM claims work items dynamically (produce_tiles), counting from 0.
    const int64_t items = grid_size(work_items(params, Traits::kBlockM), "batch * heads * query tiles (forward)");
    const auto blocks = static_cast<unsigned>(std::min<int64_t>(items, device.multiProcessorCount));
    auto* next_item_counter = static_cast<int*>(workspace);
    const CUtensorMap q_map = make_tile_map(query_extent(params, params.q), params.dtype, Traits::kBlockM);
    const CUtensorMap k_map = make_tile_map(key_extent(params, params.k), params.dtype, Traits::kBlockN);
    const CUtensorMap v_map = make_tile_map(key_extent(params, params.v), params.dtype, Traits::kBlockN);
    const CUtensorMap o_map = make_tile_map(query_extent(params, params.o), params.dtype, 64);
    allow_shared_memory<kernel>(Traits::kSharedBytes);
    if (cudaMemsetAsync(next_item_counter, 0, sizeof(int), stream) != cudaSuccess) return;  // caller reports it
    kernel<<<blocks, Traits::kThreads, Traits::kSharedBytes, stream>>>(params, claim_distance<Traits>(params),
                                                                      next_item_counter, q_map, k_map, v_map, o_map);
}

// Query rows x keys that the forward with these traits computes for one head: every visible key
// tile of every query tile, whole (the mask's cut tiles and the padding past the sequence
// included).
template <class Traits>
int64_t computed_elements(const ItemTiles& counts) {
    return counts.tiles * Traits::kBlockN * Traits::kBlockM;
}
template <class Traits>
int64_t computed_elements(const AttnParams& params) {
    return computed_elements<Traits>(item_tiles<Traits>(params));
}

// The share of the visible key tiles, over one head's work items, that a mask cuts (a causal
// diagonal, a window's edge, the sequence end): the tiles whose S is masked and whose V the
// cleaners scan. Host side; the cut tiles sit at the ends of an item's range.
template <class Traits>
double masked_tile_share(const AttnParams& params) {
    int64_t visible = 0;
    int64_t masked = 0;
    for (int64_t row0 = 0; row0 < params.seqlen_q; row0 += Traits::kBlockM) {
        const int64_t rows = std::min<int64_t>(Traits::kBlockM, params.seqlen_q - row0);
        const tile::TileRange tiles = tile::visible_key_tiles<Traits::kBlockN>(params.mask, row0, rows);
        const auto cut = [&](int64_t key_tile) {
            return tile_masked<Traits>(params, row0, static_cast<int>(rows), key_tile * Traits::kBlockN);
        };
        int64_t first = tiles.first;
        int64_t last = tiles.first + tiles.count - 1;
        for (; first <= last && cut(first); ++first) ++masked;
        for (; last >= first && cut(last); --last) ++masked;
        visible += tiles.count;
    }
    return visible == 0 ? 0.0 : static_cast<double>(masked) / static_cast<double>(visible);
}

template <int kHeadDim, typename Element>
void run_forward(const AttnParams& params, void* workspace, const cudaDeviceProp& device, cudaStream_t stream) {
    if constexpr (kHeadDim == 64) {
        // Three groups compute a tile's elements about 1.15x faster than two (D=64 N=16k, H100:
        // 478 / 415 TFLOP/s, bench/NOTES.md), but where a causal diagonal, a window or the
        // sequence end cuts the 192-row tiles they compute more elements than 128-row tiles
        // (N=1k causal: a third more). Take the tiling that finishes first by that measure.
        using TwoGroups = ForwardTraits<64, Element, 2>;
        using ThreeGroups = ForwardTraits<64, Element, 3>;
        if (computed_elements<TwoGroups>(params) * 115 < computed_elements<ThreeGroups>(params) * 100)
            return launch_forward_kernel<TwoGroups>(params, workspace, device, stream);
        return launch_forward_kernel<ThreeGroups>(params, workspace, device, stream);
    } else {
        // The late P V wait gains 2-5% on D=128's rows but lost 2-6% at N=1k causal, where the
        // mask cuts a fifth of the tiles (N=4k causal, a sixteenth, still gained 0.1-0.9%;
        // bench/NOTES.md, forward v14). There the early wait, with three cleaner warps.
        using LateWait = ForwardTraits<kHeadDim, Element>;
        using EarlyWait = ForwardTraits<kHeadDim, Element, 2, false>;
        if (masked_tile_share<LateWait>(params) > 0.125)
            return launch_forward_kernel<EarlyWait>(params, workspace, device, stream);
        // 160-key tiles (one Q slot) where the items are long: bf16 N=16k +3.2%, causal +2.9%, N=8k
        // +0.7%, but N=4k -0.4 to -0.9% and, in an earlier probe, N=2k -2% and N=1k -14%, where each
        // item's Q load, no longer hidden by a second slot, weighs more (bench/NOTES.md, forward
        // v16). Taken where the items average at least 32 tiles of 160 keys and the wider tiles
        // compute at most 2% more elements than 128-key ones.
        using WideKeys = ForwardTraits<kHeadDim, Element, 2, true, 160>;
        constexpr int kWideItemTiles = 32;
        const ItemTiles wide = item_tiles<WideKeys>(params);
        if (wide.tiles >= kWideItemTiles * wide.items &&
            computed_elements<WideKeys>(wide) * 100 <= computed_elements<LateWait>(params) * 102)
            return launch_forward_kernel<WideKeys>(params, workspace, device, stream);
        launch_forward_kernel<LateWait>(params, workspace, device, stream);
    }
}

}  // namespace fattn::cuda::sm90
