// Soak test (issue 6): several host threads, each with its own handle (and, on CUDA, its own
// stream), run a stream of mixed problems -- dtypes, head dims, lengths, GQA, causal and sliding
// windows, [B,H,N,D] / [B,N,H,D] / padded layouts -- forward then backward, for a fixed time, and
// check every result against the float64 reference (loose dtype tolerance, nothing written
// between elements). Nothing may be lost: every call must succeed and be right.
//
//   hardening_soak [--seconds S] [--threads T] [--backend cpu|cuda|all]
//
// CPU threads always run (CI runs a short soak, and the ThreadSanitizer tree a longer one); with
// --backend cuda|all and a usable GPU, T more threads drive the CUDA backend, each on its own
// non-blocking stream with its own device arena (no device-wide synchronization between them).
// Without a GPU the CUDA part prints "CUDA part skipped: ..." and the CPU part still runs.
// Prints the calls made and exits non-zero on the first failure's report.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

#if defined(FATTN_TEST_WITH_CUDA)
#include <cuda_runtime.h>
#endif

namespace {

using namespace fattn_hardening;
using Clock = std::chrono::steady_clock;

struct Options {
    double seconds = 20;
    int threads = 2;
    bool cpu = true, cuda = false;
};

Options parse(int argc, char** argv) {
    Options options;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i], value = argv[i + 1];
        if (flag == "--seconds") options.seconds = std::atof(value.c_str());
        else if (flag == "--threads") options.threads = std::max(1, std::atoi(value.c_str()));
        else if (flag == "--backend") options.cuda = value != "cpu";
        else {
            std::fprintf(stderr, "usage: %s [--seconds S] [--threads T] [--backend cpu|cuda|all]\n", argv[0]);
            std::exit(2);
        }
        if (flag == "--backend") options.cpu = value != "cuda";
    }
    return options;
}

// Shared by all threads: counts, and the first failure (which stops everyone).
struct Ledger {
    std::atomic<uint64_t> forward_calls{0}, backward_calls{0};
    std::atomic<bool> failed{false};
    std::mutex mutex;
    std::string first_failure;

    void fail(const std::string& what) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!failed.exchange(true)) first_failure = what;
    }
};

// A random small problem this backend can run.
Problem random_problem(std::mt19937_64& rng, fattn_backend_t backend) {
    auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    Dims dims;
    dims.batch = pick(1, 2);
    dims.heads_kv = pick(1, 2);
    dims.heads_q = dims.heads_kv * pick(1, 3);
    dims.seqlen_q = pick(1, 70);
    dims.seqlen_k = pick(1, 70);
    dims.head_dim = backend == FATTN_BACKEND_CUDA ? 8 * pick(1, 32) : pick(1, 160);
    const fattn_dtype_t dtype = backend == FATTN_BACKEND_CUDA ? (pick(0, 1) ? FATTN_DTYPE_F16 : FATTN_DTYPE_BF16)
                                                              : static_cast<fattn_dtype_t>(pick(0, 2));
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    desc.causal = static_cast<int32_t>(pick(0, 1));
    desc.window_left = pick(0, 3) == 0 ? static_cast<int32_t>(pick(0, dims.seqlen_k)) : -1;
    desc.window_right = !desc.causal && pick(0, 3) == 0 ? static_cast<int32_t>(pick(0, dims.seqlen_k)) : -1;
    desc.softmax_scale = pick(0, 1) ? 0.0f : static_cast<float>(pick(1, 100)) / 50.0f;
    desc.deterministic = static_cast<int32_t>(pick(0, 1));
    const auto layout = static_cast<fattn_test::Layout>(pick(0, 2));
    Problem problem(dims, dtype, desc, layout);
    problem.randomize(rng);
    problem.store_forward(problem.reference_forward());  // the backward's o and lse
    return problem;
}

// Where one thread's tensors live: the host storage itself (CPU), or a device arena and a stream
// owned by the thread (CUDA), so threads never wait on each other's work.
class Placement {
public:
    explicit Placement(fattn_backend_t backend) : backend_(backend) {
#if defined(FATTN_TEST_WITH_CUDA)
        if (backend_ == FATTN_BACKEND_CUDA) {
            check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
            check(cudaMalloc(&arena_, kArenaBytes), "cudaMalloc of the thread's arena");
        }
#endif
    }
    ~Placement() {
#if defined(FATTN_TEST_WITH_CUDA)
        if (backend_ == FATTN_BACKEND_CUDA) {
            cudaFree(arena_);
            cudaStreamDestroy(stream_);
        }
#endif
    }
    Placement(const Placement&) = delete;
    Placement& operator=(const Placement&) = delete;

    void* stream() const { return stream_; }

    // Runs `op` with every operand placed; outputs end up back in host storage.
    fattn_status_t run(fattn_handle_t handle, Problem& problem, Op op) {
        Operand* all[] = {&problem.q,    &problem.k,  &problem.v,  &problem.o, &problem.lse,
                          &problem.dout, &problem.dq, &problem.dk, &problem.dv};
        if (backend_ != FATTN_BACKEND_CUDA) return op == Op::Forward ? problem.forward(handle) : problem.backward(handle);
#if defined(FATTN_TEST_WITH_CUDA)
        size_t used = 0;
        for (Operand* operand : all) {
            const size_t bytes = operand->storage.byte_size();
            void* device = static_cast<unsigned char*>(arena_) + used;
            used += (bytes + 255) / 256 * 256;
            if (used > kArenaBytes) throw std::runtime_error("problem larger than the soak's device arena");
            check(cudaMemcpyAsync(device, operand->storage.bytes(), bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
            operand->arg.data = device;
        }
        const fattn_status_t status = op == Op::Forward ? problem.forward(handle) : problem.backward(handle);
        for (Operand* operand : all)
            check(cudaMemcpyAsync(operand->storage.bytes(), operand->arg.data, operand->storage.byte_size(),
                                  cudaMemcpyDeviceToHost, stream_),
                  "cudaMemcpyAsync");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        for (Operand* operand : all) operand->arg.data = operand->storage.bytes();
        return status;
#else
        (void)all;
        return FATTN_ERROR_NO_DEVICE;
#endif
    }

private:
#if defined(FATTN_TEST_WITH_CUDA)
    static constexpr size_t kArenaBytes = size_t{32} << 20;
    static void check(cudaError_t status, const char* what) {
        if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
    }
    cudaStream_t stream_ = nullptr;
    void* arena_ = nullptr;
#else
    void* stream_ = nullptr;
#endif
    fattn_backend_t backend_;
};

void worker(fattn_backend_t backend, uint64_t seed, Clock::time_point deadline, Ledger& ledger) {
    try {
        std::mt19937_64 rng(seed);
        Placement placement(backend);
        fattn_handle_t handle = nullptr;
        if (fattn_create(&handle, backend) != FATTN_SUCCESS) return ledger.fail(std::string("fattn_create: ") + fattn_last_error());
        if (fattn_set_stream(handle, placement.stream()) != FATTN_SUCCESS)
            return ledger.fail(std::string("fattn_set_stream: ") + fattn_last_error());
        while (Clock::now() < deadline && !ledger.failed) {
            Problem problem = random_problem(rng, backend);
            for (Op op : {Op::Forward, Op::Backward}) {
                const Snapshots poisoned = snapshot(outputs_of(problem, op));
                const fattn_status_t status = placement.run(handle, problem, op);
                (op == Op::Forward ? ledger.forward_calls : ledger.backward_calls)++;
                const std::string what = status != FATTN_SUCCESS ? std::string(status_name(status)) + ": " + fattn_last_error()
                                                                 : check_against_reference(problem, op, poisoned);
                if (!what.empty())
                    return ledger.fail(std::string(backend == FATTN_BACKEND_CUDA ? "cuda " : "cpu ") +
                                       (op == Op::Forward ? "forward " : "backward ") + problem.describe() +
                                       " seed " + std::to_string(seed) + ": " + what);
            }
        }
        fattn_destroy(handle);
    } catch (const std::exception& error) {
        ledger.fail(error.what());
    }
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse(argc, argv);
    std::vector<fattn_backend_t> backends;
    if (options.cpu) backends.push_back(FATTN_BACKEND_CPU);
    if (options.cuda) {
        if (fattn_backend_available(FATTN_BACKEND_CUDA)) backends.push_back(FATTN_BACKEND_CUDA);
        else std::printf("soak: CUDA part skipped: no usable GPU (or a build without CUDA)\n");
    }
    const uint64_t base_seed = std::random_device{}();
    Ledger ledger;
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::milliseconds(static_cast<int64_t>(options.seconds * 1000));
    std::vector<std::thread> threads;
    for (fattn_backend_t backend : backends)
        for (int t = 0; t < options.threads; ++t)
            threads.emplace_back(worker, backend, base_seed + threads.size(), deadline, std::ref(ledger));
    for (std::thread& thread : threads) thread.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

    std::string which;
    for (fattn_backend_t backend : backends) which += which.empty() ? "" : "+", which += backend == FATTN_BACKEND_CUDA ? "cuda" : "cpu";
    std::printf("soak: %llu forward + %llu backward calls checked against the float64 reference in %.1f s, "
                "%zu threads (%s), base seed %llu\n",
                static_cast<unsigned long long>(ledger.forward_calls.load()),
                static_cast<unsigned long long>(ledger.backward_calls.load()), elapsed, threads.size(),
                which.empty() ? "none" : which.c_str(), static_cast<unsigned long long>(base_seed));
    if (ledger.failed) {
        std::printf("soak: FAILED: %s\n", ledger.first_failure.c_str());
        return 1;
    }
    std::printf("soak: 0 failures\n");
    return 0;
}
