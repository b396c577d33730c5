// Fault injection (issue 6): every allocation a call makes is failed in turn, through the library's
// own hook (fattn::testing::fail_allocation_after, src/memory.h; reached by linking fattn_static).
// For n = 0, 1, 2, ... the (n+1)-th allocation fails until a call gets through; each failing call
// must return FATTN_ERROR_OUT_OF_MEMORY with a message, leave every output byte as poisoned, and
// leave the handle usable: the same call then succeeds on it and matches the float64 reference.
// Covered: the CPU backend's scratch (fresh handle, and a warm handle whose scratch must grow) for
// forward and backward, and the CUDA backend's device workspace when a GPU is usable.
// Leaks: the sub-build of CMakeLists.txt runs this program under ASan, whose LeakSanitizer fails
// the run if a failed call lost memory.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "harness.h"
#include "memory.h"

namespace {

using namespace fattn_hardening;

// Injection is switched off when a scope ends, whatever happened in it.
struct InjectionScope {
    explicit InjectionScope(int64_t successes) { fattn::testing::fail_allocation_after(successes); }
    ~InjectionScope() { fattn::testing::fail_allocation_after(-1); }
};


// A problem with fresh inputs and poisoned outputs; for the backward, o and lse are the reference's.
Problem fresh_problem(const Dims& dims, fattn_dtype_t dtype, bool causal, std::mt19937_64& rng) {
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    desc.causal = causal;
    Problem problem(dims, dtype, desc);
    problem.randomize(rng);
    problem.store_forward(problem.reference_forward());
    return problem;
}

// Fails the 1st, 2nd, ... allocation of `op` on `handle` until the call succeeds; returns how
// many allocations the call makes. `warm_up` runs first (unfailed) on the same handle, so a
// growing scratch is covered too.
int64_t fail_each_allocation(fattn_backend_t backend, Op op, const Dims& dims, fattn_dtype_t dtype,
                             const Dims* warm_up) {
    std::mt19937_64 rng(0x5EED0000u + static_cast<uint64_t>(dims.work()));
    for (int64_t n = 0;; ++n) {
        fattn_handle_t handle = nullptr;
        REQUIRE(fattn_create(&handle, backend) == FATTN_SUCCESS);
        if (warm_up != nullptr) {
            Problem small = fresh_problem(*warm_up, dtype, false, rng);
            REQUIRE(run(handle, backend, small, op) == FATTN_SUCCESS);
        }
        Problem problem = fresh_problem(dims, dtype, n % 2 == 1, rng);
        const Snapshots poisoned = snapshot(outputs_of(problem, op));
        fattn_status_t status;
        {
            InjectionScope inject(n);
            status = run(handle, backend, problem, op);
        }
        INFO("allocation #" << n + 1 << " failing, " << problem.describe() << ": " << fattn_last_error());
        if (status == FATTN_SUCCESS) {  // the call makes only n allocations
            CHECK(check_against_reference(problem, op, poisoned) == "");
            fattn_destroy(handle);
            return n;
        }
        CHECK(status == FATTN_ERROR_OUT_OF_MEMORY);
        CHECK(std::string(fattn_last_error()).find("memory") != std::string::npos);
        CHECK(first_changed(outputs_of(problem, op), poisoned, output_names(op)) == "");
        // The handle is still usable: the same call, now unhindered, succeeds and is right.
        CHECK(run(handle, backend, problem, op) == FATTN_SUCCESS);
        CHECK(check_against_reference(problem, op, poisoned) == "");
        REQUIRE(fattn_destroy(handle) == FATTN_SUCCESS);
        REQUIRE(n < 64);  // a call making more allocations than this would be a bug of its own
    }
}

const Dims kProblem{2, 4, 2, 37, 45, 64};
const Dims kSmallProblem{1, 1, 1, 5, 5, 8};
const Dims kLargerProblem{2, 8, 4, 150, 130, 128};

void cover_backend(fattn_backend_t backend, fattn_dtype_t dtype, bool expect_allocation_forward) {
    for (Op op : {Op::Forward, Op::Backward}) {
        const std::string name = op == Op::Forward ? "forward" : "backward";
        CAPTURE(name);
        const int64_t cold = fail_each_allocation(backend, op, kProblem, dtype, nullptr);
        const int64_t growing = fail_each_allocation(backend, op, kLargerProblem, dtype, &kSmallProblem);
        MESSAGE(name << ": " << cold << " allocation(s) on a fresh handle, "
                                                              << growing << " when its scratch grows");
        if (op == Op::Backward || expect_allocation_forward) CHECK(cold + growing > 0);
    }
}

}  // namespace

TEST_CASE("cpu: every host allocation failing in turn gives FATTN_ERROR_OUT_OF_MEMORY, writes nothing, keeps the handle") {
    for (fattn_dtype_t dtype : {FATTN_DTYPE_F32, FATTN_DTYPE_BF16}) {
        const std::string dtype_name = fattn_test::dtype_name(dtype);
        CAPTURE(dtype_name);
        cover_backend(FATTN_BACKEND_CPU, dtype, true);
    }
}

TEST_CASE("cuda: every device workspace allocation failing in turn gives FATTN_ERROR_OUT_OF_MEMORY, writes nothing") {
    if (!fattn_backend_available(FATTN_BACKEND_CUDA)) {
        MESSAGE("CUDA cases skipped: no usable GPU (or a build without CUDA)");
        return;
    }
    // The backward reserves the handle's device workspace; on Hopper GPUs the forward reserves its own
    // small one (the persistent kernels' work counter); the sm_80 forward allocates nothing.
    cover_backend(FATTN_BACKEND_CUDA, FATTN_DTYPE_F16, false);
}
