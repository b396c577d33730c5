// Scenarios: test cases written once as a function of the backend and registered twice,
// "cpu: <name>" (always runs) and "cuda: <name>" (runs when fattn_backend_available(CUDA), else
// prints "CUDA cases skipped: <reason>", which CTest reports as a skipped test).
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "harness.h"

namespace fattn_test {

// True (after saying why) when this machine cannot run the CUDA backend.
inline bool cuda_unavailable() {
    if (fattn_backend_available(FATTN_BACKEND_CUDA)) return false;
    fattn_handle_t handle = nullptr;
    const fattn_status_t status = fattn_create(&handle, FATTN_BACKEND_CUDA);
    fattn_destroy(handle);
    MESSAGE("CUDA cases skipped: " << std::string(status == FATTN_SUCCESS ? "backend reported unavailable" : fattn_last_error()));
    return true;
}

// Runs every problem on a fresh handle of `backend` and checks each against the reference.
inline void check_problems(fattn_backend_t backend, const std::string& scenario, const std::vector<Problem>& problems) {
    const Handle handle(backend);
    REQUIRE_MESSAGE(handle.create_status() == FATTN_SUCCESS, std::string(fattn_last_error()));
    std::mt19937_64 rng = random_stream(scenario + backend_name(backend));
    for (const Problem& problem : problems) {
        const std::string failures = run_and_check(handle, problem, rng);
        CHECK_MESSAGE(failures.empty(), failures);
    }
}

}  // namespace fattn_test

// Defines `function(fattn_backend_t backend)` (the body follows the macro) and its two test cases.
#define FATTN_SCENARIO(name, function)                                      \
    static void function(fattn_backend_t backend);                          \
    TEST_CASE("cpu: " name) { function(FATTN_BACKEND_CPU); }                \
    TEST_CASE("cuda: " name) {                                              \
        if (!fattn_test::cuda_unavailable()) function(FATTN_BACKEND_CUDA);  \
    }                                                                       \
    static void function(fattn_backend_t backend)
