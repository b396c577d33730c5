#include "memory.h"

#include <atomic>
#include <cstdlib>

#include "error.h"

namespace fattn {
namespace {

constexpr std::size_t kAlignment = 64;  // a cache line, and a full AVX-512 vector
std::atomic<std::int64_t> allocations_until_failure{-1};

}  // namespace

bool allocation_should_fail() noexcept {
    std::int64_t left = allocations_until_failure.load(std::memory_order_relaxed);
    while (left >= 0) {
        if (allocations_until_failure.compare_exchange_weak(left, left - 1, std::memory_order_relaxed))
            return left == 0;
    }
    return false;
}

void testing::fail_allocation_after(std::int64_t successes) noexcept {
    allocations_until_failure.store(successes < 0 ? -1 : successes, std::memory_order_relaxed);
}

void* host_alloc(std::size_t bytes, const char* what) {
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* pointer = nullptr;
    if (rounded >= bytes && !allocation_should_fail())
        pointer = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
    if (pointer == nullptr)
        fail(FATTN_ERROR_OUT_OF_MEMORY, "could not allocate ", bytes, " bytes of host memory for ", what);
    return pointer;
}

void host_free(void* pointer) noexcept { std::free(pointer); }

void HostBuffer::reserve(std::size_t bytes, const char* what) {
    if (bytes <= capacity_) return;
    void* grown = host_alloc(bytes, what);
    host_free(data_);
    data_ = grown;
    capacity_ = bytes;
}

}  // namespace fattn
