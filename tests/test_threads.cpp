// Concurrency promises of the ABI: separate handles may be used from separate threads at once
// (each thread its own handle, its own shapes and masks, every result checked against the
// reference), and fattn_last_error() stays per thread while other threads fail and succeed.
// Worker threads only record text; the test thread asserts, so doctest sees every failure.
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "scenario.h"

using namespace fattn_test;

namespace {

// The problems of worker `index`: different dtypes, shapes and masks per thread.
std::vector<Problem> worker_problems(int index) {
    const fattn_dtype_t dtypes[] = {FATTN_DTYPE_F32, FATTN_DTYPE_F16, FATTN_DTYPE_BF16};
    const fattn_dtype_t dtype = dtypes[index % 3];
    Problem causal = Problem(dtype, 40 + 17 * index, 60 + 9 * index, 32 + 8 * index).causal();
    Problem windowed = Problem(dtype, 90 - 7 * index, 50, 64).window(3 + index, 2);
    windowed.with_heads(2, 4, 2).with_layout(Layout::BNHD);
    Problem grouped = Problem(dtype, 33, 33 + index, 16);
    grouped.with_heads(1, 4, 1).with_layout(Layout::Padded);
    return {causal, windowed, grouped};
}

// Starts `count` threads running `work(index)` together and waits for all.
template <typename Work>
void run_together(int count, Work work) {
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int index = 0; index < count; ++index)
        threads.emplace_back([&, index] {
            ready.fetch_add(1);
            while (ready.load() < count) std::this_thread::yield();  // maximize overlap
            work(index);
        });
    for (std::thread& thread : threads) thread.join();
}

}  // namespace

FATTN_SCENARIO("separate handles used from several threads at once", concurrent_handles) {
    constexpr int kThreads = 4;
    std::vector<std::string> failures(kThreads);
    run_together(kThreads, [&](int index) {
        try {
            const Handle handle(backend);
            if (handle.create_status() != FATTN_SUCCESS) {
                failures[index] = std::string("fattn_create: ") + fattn_last_error();
                return;
            }
            std::mt19937_64 rng = random_stream("thread " + std::to_string(index));
            for (const Problem& problem : worker_problems(index)) failures[index] += run_and_check(handle, problem, rng);
        } catch (const std::exception& error) {
            failures[index] = error.what();
        }
    });
    for (int index = 0; index < kThreads; ++index) CHECK_MESSAGE(failures[index].empty(), "thread " << index << ": " << failures[index]);
}

TEST_CASE("fattn_last_error stays per thread while threads fail and succeed concurrently") {
    constexpr int kThreads = 4, kRounds = 40;
    std::vector<std::string> failures(kThreads);
    run_together(kThreads, [&](int index) {
        const Handle handle(FATTN_BACKEND_CPU);
        std::mt19937_64 rng = random_stream("errors " + std::to_string(index));
        const Problem valid(FATTN_DTYPE_F32, 9, 11, 8);
        const ProblemTensors tensors(valid, rng);
        Problem invalid = valid;
        invalid.desc.window_left = -10 - index;  // each thread's own bad value
        const std::string own = "desc.window_left=" + std::to_string(-10 - index);
        for (int round = 0; round < kRounds && failures[index].empty(); ++round) {
            const Run refused = execute(handle, invalid, tensors, Passes::Forward);
            const Run accepted = execute(handle, valid, tensors, Passes::Forward);
            // The last *failed* call's message survives the successful one.
            const std::string message = fattn_last_error();
            if (refused.status != FATTN_ERROR_INVALID_ARGUMENT || accepted.status != FATTN_SUCCESS ||
                message.find(own) == std::string::npos)
                failures[index] = "round " + std::to_string(round) + ": message \"" + message + "\", expected " + own;
        }
    });
    for (int index = 0; index < kThreads; ++index) CHECK_MESSAGE(failures[index].empty(), "thread " << index << ": " << failures[index]);
}
