// The doctest runner of the fattn suite. It adds one thing to doctest's own main: when any case
// fails, it prints the random seed of the run, so the failure can be replayed with
// FATTN_TEST_SEED=<seed> (the inputs are fresh random draws every run).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "harness.h"

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    const int failed = context.run();
    if (failed != 0 && !context.shouldExit())
        std::fprintf(stderr, "fattn tests failed with seed %llu: rerun with FATTN_TEST_SEED=%llu\n",
                     static_cast<unsigned long long>(fattn_test::suite_seed()),
                     static_cast<unsigned long long>(fattn_test::suite_seed()));
    return failed;
}
