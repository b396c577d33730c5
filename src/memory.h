// Host scratch memory, and the allocation-failure injection that the fault tests drive.
// Every allocation the library makes on behalf of a call (host scratch here, device workspace in
// cuda/) first asks allocation_should_fail(), so tests can make the Nth allocation fail and check
// that the call returns FATTN_ERROR_OUT_OF_MEMORY, writes nothing, and leaves the handle usable.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fattn {

// Aligned host allocation; throws Error(FATTN_ERROR_OUT_OF_MEMORY) naming `what` on failure.
void* host_alloc(std::size_t bytes, const char* what);
void host_free(void* pointer) noexcept;

// A growable aligned host buffer that keeps its capacity across calls (a handle's scratch).
class HostBuffer {
public:
    HostBuffer() = default;
    HostBuffer(const HostBuffer&) = delete;
    HostBuffer& operator=(const HostBuffer&) = delete;
    ~HostBuffer() { host_free(data_); }

    // Ensures room for `bytes`; on failure throws and keeps the old buffer intact.
    void reserve(std::size_t bytes, const char* what);
    void* data() const noexcept { return data_; }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    void* data_ = nullptr;
    std::size_t capacity_ = 0;
};

// True when the injected-failure countdown says this allocation must fail.
bool allocation_should_fail() noexcept;

namespace testing {
// Makes the allocation after the next `successes` ones fail (once), for every thread;
// a negative value disables injection. Only the test programs, linked with fattn_static, call it.
void fail_allocation_after(std::int64_t successes) noexcept;
}  // namespace testing

}  // namespace fattn
