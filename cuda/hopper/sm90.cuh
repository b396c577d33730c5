// Thin wrappers over the Hopper (sm_90a) instructions the Hopper kernels are built from: the
// tensor-memory accelerator (TMA) copy of a tile completing on an mbarrier, TMA stores and
// reductions of a tile completing in bulk groups, mbarrier waits,
// warpgroup MMA (wgmma) with shared-memory descriptors, named barriers and setmaxnreg. Names
// follow the PTX ISA. Everything here compiles only for sm_90a; the callers guard with
// FATTN_SM90_ENABLED so the other targets of the same translation unit compile an empty kernel.
//
// Shared-memory tiles use the 128-byte swizzle that both TMA and wgmma understand: a tile of R
// rows x C columns of 16-bit elements (C a multiple of 64) is stored as C / 64 column blocks of
// R rows x 128 bytes each, every 8 rows (1024 bytes, aligned to 1024) one swizzle atom in which
// the 16-byte chunks of row r are permuted by XOR with r % 8 (fp32 tiles: 32 columns per block).
// TMA writes this layout from a plain row-major global tensor; wgmma reads it through a matrix
// descriptor (SwizzledTile below).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ptx.cuh"
#include "tile.cuh"

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FATTN_SM90_ENABLED 1
#else
#define FATTN_SM90_ENABLED 0
#endif

namespace fattn::cuda::sm90 {

// ---- mbarrier -------------------------------------------------------------------------------

__device__ __forceinline__ void mbarrier_init(uint64_t* barrier, uint32_t arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(ptx::smem_address(barrier)), "r"(arrivals));
}

// Makes initialized barriers visible to the other threads and to the TMA unit (then __syncthreads).
__device__ __forceinline__ void mbarrier_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// One arrival that also announces `bytes` of TMA transactions the phase must wait for.
__device__ __forceinline__ void mbarrier_arrive_expect_bytes(uint64_t* barrier, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(ptx::smem_address(barrier)),
                 "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* barrier) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(ptx::smem_address(barrier)) : "memory");
}

// One arrival of a warp on `barrier`, after every lane's earlier reads of what the arrival
// releases: __syncwarp orders them before lane 0's arrive (racecheck flagged lane 31's reads of a
// released slot without it).
__device__ __forceinline__ void warp_arrive(uint64_t* barrier, int lane) {
    __syncwarp();
    if (lane == 0) mbarrier_arrive(barrier);
}

// Waits until the phase of parity `parity` has completed. A fresh barrier is in phase 0, so a wait
// for parity 1 returns at once: producers start waiting on "empty" barriers with parity 1.
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, uint32_t parity) {
    const uint32_t address = ptx::smem_address(barrier);
    uint32_t done = 0;
    do {
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(address), "r"(parity)
            : "memory");
    } while (done == 0);
}

// ---- TMA ------------------------------------------------------------------------------------

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Copies the box of `map` at element coordinates (column, row, head, batch) into shared memory at
// `destination`; completion is counted in bytes on `barrier`. Out-of-range elements are zeros.
__device__ __forceinline__ void tma_load_4d(void* destination, const CUtensorMap* map, uint64_t* barrier,
                                            int32_t column, int32_t row, int32_t head, int32_t batch) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
        "[%2];\n" ::"r"(ptx::smem_address(destination)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(ptx::smem_address(barrier)), "r"(column), "r"(row), "r"(head),
        "r"(batch)
        : "memory");
}

// Copies `bytes` (a multiple of 16; both addresses 16-byte aligned) of contiguous global memory
// into shared memory; completion is counted in bytes on `barrier`.
__device__ __forceinline__ void bulk_load(void* destination, const void* source, uint32_t bytes, uint64_t* barrier) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
            ptx::smem_address(destination)),
        "l"(reinterpret_cast<uint64_t>(source)), "r"(bytes), "r"(ptx::smem_address(barrier))
        : "memory");
}

// Stores the box of `map` at element coordinates (column, row, head, batch) from shared memory at
// `source` (in the layout a load of that box writes); elements outside the tensor are skipped.
// Completes in this thread's bulk group (bulk_commit, bulk_wait).
__device__ __forceinline__ void tma_store_4d(const CUtensorMap* map, const void* source, int32_t column, int32_t row,
                                             int32_t head, int32_t batch) {
    asm volatile(
        "cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group [%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(
            reinterpret_cast<uint64_t>(map)),
        "r"(ptx::smem_address(source)), "r"(column), "r"(row), "r"(head), "r"(batch)
        : "memory");
}

// As tma_store_4d, but adds the box to the global elements (an atomic reduction per element).
__device__ __forceinline__ void tma_reduce_add_4d(const CUtensorMap* map, const void* source, int32_t column,
                                                  int32_t row, int32_t head, int32_t batch) {
    asm volatile(
        "cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group [%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(
            reinterpret_cast<uint64_t>(map)),
        "r"(ptx::smem_address(source)), "r"(column), "r"(row), "r"(head), "r"(batch)
        : "memory");
}

// Closes this thread's bulk group of the stores and reductions issued since the last commit.
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }

// Waits until at most `Pending` of this thread's bulk groups are still reading shared memory
// (their sources may then be overwritten).
template <int Pending>
__device__ __forceinline__ void bulk_wait_read() {
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(Pending) : "memory");
}

// Waits until all of this thread's bulk groups have completed, their global writes included.
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

// Orders this thread's ordinary shared-memory writes before later reads by wgmma or TMA.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// ---- registers and named barriers -----------------------------------------------------------

template <int kRegisters>
__device__ __forceinline__ void raise_registers() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

template <int kRegisters>
__device__ __forceinline__ void lower_registers() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

// Named barriers: `id` 1..15 (0 is __syncthreads) over `threads` threads (a multiple of 32).
// sync waits for all of them; arrive counts this thread without waiting.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- swizzled tiles and wgmma descriptors ----------------------------------------------------

// A kRows x kCols tile of kElementBytes-byte elements in the 128-byte-swizzled layout (see the
// file comment; a column block is 128 bytes of a row: 64 16-bit or 32 32-bit elements). The wgmma
// descriptors are for 16-bit tiles; fp32 tiles are staged for TMA only.
template <int kRows, int kCols, int kElementBytes = 2>
struct SwizzledTile {
    static constexpr int kBlockColumns = 128 / kElementBytes;
    static constexpr int kChunkColumns = 16 / kElementBytes;
    static_assert(kRows % 8 == 0 && kCols % kBlockColumns == 0, "whole swizzle atoms");
    static constexpr uint32_t kBlockBytes = kRows * 128;  // one column block per row
    static constexpr uint32_t kBytes = kBlockBytes * (kCols / kBlockColumns);
    static constexpr uint32_t kAtomBytes = 1024;          // 8 rows

    // Descriptor of the 16-column slice `k_step` of rows [row0, row0 + 8 * n) read K-major (the
    // tile's columns are the product's reduction dimension): Q and K in Q K^T.
    __device__ __forceinline__ static uint64_t k_major(uint32_t base, int row0, int k_step) {
        return descriptor(base + row0 * 128, (k_step / 4) * kBlockBytes + (k_step % 4) * 32, 16, kAtomBytes);
    }
    // Descriptor of the 16-row slice `k_step` read MN-major (the tile's rows are the reduction
    // dimension, its columns the output's): V in P V. Consecutive column blocks are kBlockBytes
    // apart, consecutive 8-row atoms 1024 bytes.
    __device__ __forceinline__ static uint64_t mn_major(uint32_t base, int k_step) {
        return descriptor(base, k_step * 16 * 128, kBlockBytes, kAtomBytes);
    }

    // Byte offset of element (row, col): its column block, its row, and its 16-byte chunk moved
    // by the swizzle (chunk XOR row % 8); for ordinary stores of a tile that wgmma reads.
    __device__ __forceinline__ static uint32_t element_offset(int row, int col) {
        return (col / kBlockColumns) * kBlockBytes + row * 128 +
               ((((col % kBlockColumns) / kChunkColumns) ^ (row % 8)) * 16) + (col % kChunkColumns) * kElementBytes;
    }
    // element_offset(row, col + 8 * t) from first = element_offset(row, col), for col < 8 (an
    // accumulator fragment's first column): the swizzle is an XOR of chunk bits that col's chunk
    // does not use, so each of a fragment row's stores costs one XOR with a constant instead of the
    // whole computation (whose results ptxas would otherwise keep, and spill, across the loop).
    __device__ __forceinline__ static uint32_t fragment_offset(uint32_t first, int t) {
        return (first ^ ((((8 * t) % kBlockColumns) / kChunkColumns) << 4)) + (8 * t / kBlockColumns) * kBlockBytes;
    }

private:
    // The descriptor of the slice `offset` bytes past `base`: the base's low word (address and
    // leading offset) plus the offset, whose 16-byte units add to the address field without a carry
    // (shared addresses are below 2^18). Slices of one base then cost one add each, where building
    // every slice's fields anew cost about five uniform instructions per wgmma, on the issue slots
    // the consumers' elementwise work also needs (bench/NOTES.md: forward v10, backward v5).
    __device__ __forceinline__ static uint64_t descriptor(uint32_t base, uint32_t offset, uint32_t leading_bytes,
                                                          uint32_t stride_bytes) {
        constexpr uint32_t kSwizzle128B = 1u << 30;
        const uint32_t low = (((base & 0x3ffff) >> 4) | (((leading_bytes & 0x3ffff) >> 4) << 16)) + offset / 16;
        const uint32_t high = ((stride_bytes & 0x3ffff) >> 4) | kSwizzle128B;
        return (static_cast<uint64_t>(high) << 32) | low;
    }
};

// Replaces the NaNs and infinities of a shared tile of kBytes (any layout: whole 16-byte chunks)
// by 0 (tile::zero_nonfinite_chunk says why); the kThreads threads numbered `thread` share the
// work. Returns whether this thread replaced any; if so it has already ordered its writes before
// later wgmma reads (fence_async_shared), and the caller's barrier completes the tile.
// Inputs are almost always finite: a first pass only looks (four loads in flight, three
// instructions per word), and a chunk is rewritten only after that pass found something. The
// forward's cleaner warps share their sub-partitions with the consumers, whose issue slots a
// slower scan takes (bench/NOTES.md, forward v11).
template <typename Element, uint32_t kBytes, int kThreads>
__device__ __forceinline__ bool zero_nonfinite_tile(unsigned char* tile_bytes, int thread) {
    constexpr uint32_t kChunks = kBytes / 16;
    auto* chunks = reinterpret_cast<uint4*>(tile_bytes);
    uint32_t nonfinite = 0;
#pragma unroll 4
    for (uint32_t chunk = thread; chunk < kChunks; chunk += kThreads)
        nonfinite |= tile::nonfinite_halves<Element>(chunks[chunk]);
    if (nonfinite == 0) return false;
#pragma unroll 1
    for (uint32_t chunk = thread; chunk < kChunks; chunk += kThreads)
        tile::zero_nonfinite_chunk<Element>(chunks + chunk);
    fence_async_shared();
    return true;
}

// ---- wgmma ----------------------------------------------------------------------------------

// Orders register writes before the next wgmma reads them (accumulators rescaled, A operands).
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most `Pending` committed wgmma groups of this warpgroup are in flight.
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}

// This thread's warpgroup. With kUniform, as a value the compiler knows to be the same across the
// warp (a shuffle from lane 0): what a kernel derives from it (a group's tile bases, its wgmma
// descriptors) then stays in uniform registers, where threadIdx.x / 128 alone leaves it in
// per-thread registers, moved into uniform ones before every wgmma. Whether that pays depends on
// the kernel (each kernel's traits say where it was measured to pay).
template <bool kUniform>
__device__ __forceinline__ int warpgroup_index() {
    const int warpgroup = static_cast<int>(threadIdx.x) / 128;
    if constexpr (kUniform) return __shfl_sync(0xffffffffu, warpgroup, 0);
    return warpgroup;
}

// `value`, opaque to the compiler: what a loop derives from it is computed in the loop (a few
// integer operations) rather than hoisted out of it into registers that spill.
__device__ __forceinline__ uint32_t opaque(uint32_t value) {
    asm volatile("" : "+r"(value));
    return value;
}

// Keeps the compiler from moving accesses of accumulators across a wgmma that is in flight.
template <int N>
__device__ __forceinline__ void fence_accumulators(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define FATTN_ACC8(d, i)                                                                                      \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
        "+f"(d[i + 7])
#define FATTN_ACC32(d) FATTN_ACC8(d, 0), FATTN_ACC8(d, 8), FATTN_ACC8(d, 16), FATTN_ACC8(d, 24)
#define FATTN_ACC64(d) FATTN_ACC32(d), FATTN_ACC8(d, 32), FATTN_ACC8(d, 40), FATTN_ACC8(d, 48), FATTN_ACC8(d, 56)
#define FATTN_ACC80(d) FATTN_ACC64(d), FATTN_ACC8(d, 64), FATTN_ACC8(d, 72)
#define FATTN_REGS32                                                                                           \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define FATTN_REGS64                                                                                           \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "  \
    "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define FATTN_REGS80                                                                                           \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "  \
    "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, "  \
    "%65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79}"

// wgmma.m64nNk16 with fp32 accumulators for N = 64, 128 and 160 (the forward's wide key tiles) and
// Element __half or __nv_bfloat16.
// D is 64 x N, N / 2 registers per thread in the accumulator layout (fwd_softmax.cuh).
template <int N, typename Element>
struct Wgmma;

#define FATTN_DEFINE_WGMMA(N, TYPE, NAME, REGS, ACC, A_SS, B_SS, SCALE_SS, TRANS_SS, A_RS, B_RS, SCALE_RS)     \
    template <>                                                                                               \
    struct Wgmma<N, TYPE> {                                                                                   \
        /* D = A * B (+ D when accumulate): A (64 x 16) and B (16 x N) by descriptors, K-major unless       \
           kTransposeA / kTransposeB (then MN-major: A's rows, B's columns are the contiguous dimension). */ \
        template <int kTransposeA = 0, int kTransposeB = 0>                                                   \
        __device__ __forceinline__ static void ss(float (&d)[N / 2], uint64_t a, uint64_t b, bool accumulate) { \
            asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " SCALE_SS ", 0;\n"                               \
                         " wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." NAME "." NAME " " REGS ", " A_SS       \
                         ", " B_SS ", p, 1, 1, " TRANS_SS ";\n}\n"                                             \
                         : ACC(d)                                                                             \
                         : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransposeA), "n"(kTransposeB)); \
        }                                                                                                     \
        /* Both MN-major: dQ = dS K from dS^T and K. */                                                      \
        __device__ __forceinline__ static void ss_mn(float (&d)[N / 2], uint64_t a, uint64_t b, bool accumulate) { \
            ss<1, 1>(d, a, b, accumulate);                                                                    \
        }                                                                                                     \
        /* D = A * B (+ D when accumulate): A (64 x 16) from registers in the accumulator-derived         \
           fragment layout, B by a descriptor, MN-major (its rows are the reduction dimension). */           \
        __device__ __forceinline__ static void rs_mn(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b,     \
                                                     bool accumulate = true) {                                \
            asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " SCALE_RS ", 0;\n"                               \
                         " wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." NAME "." NAME " " REGS ", " A_RS       \
                         ", " B_RS ", p, 1, 1, 1;\n}\n"                                                        \
                         : ACC(d)                                                                             \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate))); \
        }                                                                                                     \
    };

FATTN_DEFINE_WGMMA(64, __half, "f16", FATTN_REGS32, FATTN_ACC32, "%32", "%33", "%34", "%35, %36",
                   "{%32, %33, %34, %35}", "%36", "%37")
FATTN_DEFINE_WGMMA(64, __nv_bfloat16, "bf16", FATTN_REGS32, FATTN_ACC32, "%32", "%33", "%34", "%35, %36",
                   "{%32, %33, %34, %35}", "%36", "%37")
FATTN_DEFINE_WGMMA(128, __half, "f16", FATTN_REGS64, FATTN_ACC64, "%64", "%65", "%66", "%67, %68",
                   "{%64, %65, %66, %67}", "%68", "%69")
FATTN_DEFINE_WGMMA(128, __nv_bfloat16, "bf16", FATTN_REGS64, FATTN_ACC64, "%64", "%65", "%66", "%67, %68",
                   "{%64, %65, %66, %67}", "%68", "%69")
FATTN_DEFINE_WGMMA(160, __half, "f16", FATTN_REGS80, FATTN_ACC80, "%80", "%81", "%82", "%83, %84",
                   "{%80, %81, %82, %83}", "%84", "%85")
FATTN_DEFINE_WGMMA(160, __nv_bfloat16, "bf16", FATTN_REGS80, FATTN_ACC80, "%80", "%81", "%82", "%83, %84",
                   "{%80, %81, %82, %83}", "%84", "%85")

#undef FATTN_DEFINE_WGMMA
#undef FATTN_REGS80
#undef FATTN_REGS64
#undef FATTN_REGS32
#undef FATTN_ACC80
#undef FATTN_ACC64
#undef FATTN_ACC32
#undef FATTN_ACC8

}  // namespace fattn::cuda::sm90
