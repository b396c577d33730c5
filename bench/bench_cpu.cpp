// fattn_bench_cpu: throughput of the CPU backend beside its same-run ceiling and peer.
//
// For B=1, H=8, N in {512, 2048, 4096}, D in {64, 128}, causal and not, f32 and bf16, it times
// fattn_forward and fattn_backward (median of --reps runs after a warm-up) and reports GFLOP/s
// (forward 4*B*H*Nq*Nk*D, halved when causal; backward 2.5x the forward) and the ratio to the
// Eigen fp32 GEMM rate measured in the same run (the best of large square products on the same
// threads, before and after the rows: the ceiling the issue sets). A naive attention that materializes the N x N scores with Eigen GEMMs
// (forward and backward, f32) is the peer a user would write instead. It also measures the extra
// memory of one forward and one backward at N=65536, D=64, B=1, H=1 (peak RSS minus the tensors).
//
// Output: a table on stdout, progress on stderr, and bench/results/cpu-<machine>-<date>.json and
// .md (or --out-dir). Run `fattn_bench_cpu --help` for the options.
#include <fattn.h>
#include <omp.h>

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Options {
    std::vector<int64_t> seqlens{512, 2048, 4096};
    std::vector<int64_t> head_dims{64, 128};
    std::vector<int> dtypes{FATTN_DTYPE_F32, FATTN_DTYPE_BF16};
    std::vector<int> causal{0, 1};
    int64_t batch = 1;
    int64_t heads = 8;
    int threads = 2;
    int reps = 5;
    bool naive = true;
    bool memory = true;
    std::string machine = "cpu";
    std::string out_dir = "bench/results";
};

[[noreturn]] void usage(int status) {
    std::printf(
        "usage: fattn_bench_cpu [options]\n"
        "  --quick            N=2048 only, f32 only, 3 reps, no memory measurement\n"
        "  --n LIST           sequence lengths, comma-separated (default 512,2048,4096)\n"
        "  --d LIST           head dims (default 64,128)\n"
        "  --dtype LIST       f32,bf16,f16 (default f32,bf16)\n"
        "  --causal LIST      0,1 (default 0,1)\n"
        "  --heads H          query and kv heads (default 8)\n"
        "  --threads T        OpenMP threads for fattn, GEMM and naive (default 2)\n"
        "  --reps R           timed repetitions after one warm-up; the median is reported (default 5)\n"
        "  --no-naive         skip the materialized-score peer\n"
        "  --no-memory        skip the N=65536 extra-memory measurement\n"
        "  --machine NAME     machine tag in the result file names (default cpu)\n"
        "  --out-dir DIR      where the JSON and markdown go (default bench/results; '' = none)\n");
    std::exit(status);
}

template <typename T>
std::vector<T> parse_list(const char* text) {
    std::vector<T> values;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) values.push_back(static_cast<T>(std::stoll(item)));
    return values;
}

int parse_dtype(const std::string& name) {
    if (name == "f32") return FATTN_DTYPE_F32;
    if (name == "f16") return FATTN_DTYPE_F16;
    if (name == "bf16") return FATTN_DTYPE_BF16;
    std::fprintf(stderr, "unknown dtype %s\n", name.c_str());
    usage(2);
}

const char* dtype_name(int dtype) { return dtype == FATTN_DTYPE_F32 ? "f32" : dtype == FATTN_DTYPE_F16 ? "f16" : "bf16"; }

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) usage(2);
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") usage(0);
        else if (arg == "--quick") { o.seqlens = {2048}; o.dtypes = {FATTN_DTYPE_F32}; o.reps = 3; o.memory = false; }
        else if (arg == "--n") o.seqlens = parse_list<int64_t>(value());
        else if (arg == "--d") o.head_dims = parse_list<int64_t>(value());
        else if (arg == "--causal") o.causal = parse_list<int>(value());
        else if (arg == "--dtype") {
            o.dtypes.clear();
            std::stringstream in(value());
            std::string item;
            while (std::getline(in, item, ',')) o.dtypes.push_back(parse_dtype(item));
        }
        else if (arg == "--heads") o.heads = std::stoll(value());
        else if (arg == "--threads") o.threads = std::stoi(value());
        else if (arg == "--reps") o.reps = std::max(1, std::stoi(value()));
        else if (arg == "--no-naive") o.naive = false;
        else if (arg == "--no-memory") o.memory = false;
        else if (arg == "--machine") o.machine = value();
        else if (arg == "--out-dir") o.out_dir = value();
        else { std::fprintf(stderr, "unknown option %s\n", arg.c_str()); usage(2); }
    }
    return o;
}

double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median wall time of `reps` runs of `body` after one warm-up run.
double median_seconds(int reps, const std::function<void()>& body) {
    body();
    std::vector<double> times;
    for (int i = 0; i < reps; ++i) {
        const double start = seconds_now();
        body();
        times.push_back(seconds_now() - start);
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

void check(fattn_status_t status, const char* what) {
    if (status == FATTN_SUCCESS) return;
    std::fprintf(stderr, "%s failed: %s: %s\n", what, fattn_status_string(status), fattn_last_error());
    std::exit(1);
}

// A [B,H,N,D] contiguous tensor with its storage.
struct Tensor {
    std::vector<unsigned char> storage;
    fattn_tensor_t desc{};

    Tensor(int dtype, int64_t b, int64_t h, int64_t n, int64_t d, std::mt19937* rng) {
        const int64_t elements = b * h * n * d;
        const int64_t element_bytes = dtype == FATTN_DTYPE_F32 ? 4 : 2;
        storage.resize(static_cast<std::size_t>(elements * element_bytes));
        desc.data = storage.data();
        desc.dtype = dtype;
        const int64_t shape[4] = {b, h, n, d};
        const int64_t strides[4] = {h * n * d, n * d, d, 1};
        std::memcpy(desc.shape, shape, sizeof shape);
        std::memcpy(desc.strides, strides, sizeof strides);
        std::normal_distribution<float> normal;
        for (int64_t i = 0; i < elements; ++i) {
            const float x = rng != nullptr ? normal(*rng) : 0.0f;
            if (dtype == FATTN_DTYPE_F32) reinterpret_cast<float*>(desc.data)[i] = x;
            else if (dtype == FATTN_DTYPE_F16) reinterpret_cast<Eigen::half*>(desc.data)[i] = Eigen::half(x);
            else reinterpret_cast<Eigen::bfloat16*>(desc.data)[i] = Eigen::bfloat16(x);
        }
    }
    float* f32() { return reinterpret_cast<float*>(desc.data); }
};

// All tensors of one problem, filled with random values.
struct Problem {
    Tensor q, k, v, o, lse, dout, dq, dk, dv;
    Problem(int dtype, int64_t b, int64_t h, int64_t n, int64_t d, std::mt19937& rng)
        : q(dtype, b, h, n, d, &rng), k(dtype, b, h, n, d, &rng), v(dtype, b, h, n, d, &rng),
          o(dtype, b, h, n, d, &rng), lse(FATTN_DTYPE_F32, b, h, n, 1, &rng), dout(dtype, b, h, n, d, &rng),
          dq(dtype, b, h, n, d, &rng), dk(dtype, b, h, n, d, &rng), dv(dtype, b, h, n, d, &rng) {}

    void forward(fattn_handle_t handle, const fattn_attention_desc_t& desc) {
        check(fattn_forward(handle, &desc, &q.desc, &k.desc, &v.desc, &o.desc, &lse.desc), "fattn_forward");
    }
    void backward(fattn_handle_t handle, const fattn_attention_desc_t& desc) {
        check(fattn_backward(handle, &desc, &q.desc, &k.desc, &v.desc, &o.desc, &dout.desc, &lse.desc, &dq.desc,
                             &dk.desc, &dv.desc),
              "fattn_backward");
    }
};

double attention_flops(int64_t b, int64_t h, int64_t n, int64_t d, bool causal) {
    const double flops = 4.0 * b * h * n * n * d;
    return causal ? flops / 2 : flops;
}

// The ceiling: Eigen's fp32 GEMM on large square products, on the same threads; the best of a
// few sizes (on the Zen 5 box Eigen peaks near 1024 and loses ~15% at 2048 and above).
double eigen_gemm_gflops(int threads, int reps) {
    Eigen::setNbThreads(threads);
    double best = 0;
    for (const int64_t n : {1024, 1536, 2048}) {
        const Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n);
        const Eigen::MatrixXf b = Eigen::MatrixXf::Random(n, n);
        Eigen::MatrixXf c(n, n);
        const double gflops = 2.0 * n * n * n / median_seconds(reps, [&] { c.noalias() = a * b; }) * 1e-9;
        std::fprintf(stderr, "Eigen GEMM %lld^3: %.1f GFLOP/s\n", static_cast<long long>(n), gflops);
        best = std::max(best, gflops);
    }
    return best;
}

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrix>;

// The peer a user would write: scores materialized per head, every product an Eigen GEMM.
struct NaiveAttention {
    int64_t n, d;
    bool causal;
    RowMatrix scores, dscores;

    NaiveAttention(int64_t n_, int64_t d_, bool causal_) : n(n_), d(d_), causal(causal_), scores(n_, n_), dscores(n_, n_) {}

    void softmax_rows(float scale) {
        for (int64_t i = 0; i < n; ++i) {
            const int64_t visible = causal ? i + 1 : n;
            auto row = scores.row(i);
            row.head(visible) *= scale;
            const float m = row.head(visible).maxCoeff();
            row.head(visible) = (row.head(visible).array() - m).exp();
            row.head(visible) /= row.head(visible).sum();
            row.tail(n - visible).setZero();
        }
    }

    void forward(float* q, float* k, float* v, float* o) {
        MatrixMap mq(q, n, d), mk(k, n, d), mv(v, n, d), mo(o, n, d);
        scores.noalias() = mq * mk.transpose();
        softmax_rows(1.0f / std::sqrt(static_cast<float>(d)));
        mo.noalias() = scores * mv;
    }

    void backward(float* q, float* k, float* v, float* o, float* dout, float* dq, float* dk, float* dv) {
        MatrixMap mq(q, n, d), mk(k, n, d), mv(v, n, d), mo(o, n, d), mdo(dout, n, d), mdq(dq, n, d), mdk(dk, n, d),
            mdv(dv, n, d);
        const float scale = 1.0f / std::sqrt(static_cast<float>(d));
        scores.noalias() = mq * mk.transpose();
        softmax_rows(scale);
        mdv.noalias() = scores.transpose() * mdo;
        dscores.noalias() = mdo * mv.transpose();
        const Eigen::VectorXf delta = (mdo.array() * mo.array()).rowwise().sum();
        dscores = (scores.array() * (dscores.colwise() - delta).array()) * scale;
        mdq.noalias() = dscores * mk;
        mdk.noalias() = dscores.transpose() * mq;
    }
};

struct Row {
    std::string dtype;
    int64_t n, d;
    int causal;
    double fwd_gflops, bwd_gflops;
    double naive_fwd_gflops = 0, naive_bwd_gflops = 0;  // 0: not measured
};

// ---- extra memory ----------------------------------------------------------------------------

int64_t status_kib(const char* field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::size_t length = std::strlen(field);
    while (std::getline(in, line))
        if (line.compare(0, length, field) == 0) return std::stoll(line.substr(length + 1));
    return -1;
}

// Peak RSS growth over `body`, in KiB: the kernel's high-water mark is reset first
// (/proc/self/clear_refs), so earlier peaks do not count.
int64_t extra_kib(const std::function<void()>& body) {
    std::ofstream("/proc/self/clear_refs") << "5";
    const int64_t before = status_kib("VmRSS:");
    body();
    return status_kib("VmHWM:") - before;
}

struct MemoryResult {
    int64_t forward_kib = -1, backward_kib = -1;
};

MemoryResult measure_memory(int threads) {
    const int64_t n = 65536, d = 64;
    std::mt19937 rng(7);
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    desc.causal = 1;  // causal halves the time; the memory does not depend on the mask
    Problem p(FATTN_DTYPE_F32, 1, 1, n, d, rng);
    omp_set_num_threads(threads);
    volatile int started = 0;
#pragma omp parallel
    started = started + 1;  // the OpenMP pool (thread stacks) starts outside the measurement

    // Each call on a fresh handle, so its scratch is counted.
    MemoryResult result;
    auto measure = [&](const char* what, auto&& call) {
        std::fprintf(stderr, "memory: %s at N=%lld D=%lld ...\n", what, static_cast<long long>(n),
                     static_cast<long long>(d));
        fattn_handle_t handle = nullptr;
        check(fattn_create(&handle, FATTN_BACKEND_CPU), "fattn_create");
        const int64_t kib = extra_kib([&] { call(handle); });
        fattn_destroy(handle);
        return kib;
    };
    result.forward_kib = measure("forward", [&](fattn_handle_t h) { p.forward(h, desc); });
    result.backward_kib = measure("backward", [&](fattn_handle_t h) { p.backward(h, desc); });
    return result;
}

// ---- report ----------------------------------------------------------------------------------

// The 1-minute load average: other processes on a small shared machine skew every timing.
double load_average() {
    double one_minute = -1;
    std::ifstream("/proc/loadavg") >> one_minute;
    return one_minute;
}

std::string today() {
    char text[16];
    const std::time_t now = std::time(nullptr);
    std::strftime(text, sizeof text, "%Y-%m-%d", std::gmtime(&now));
    return text;
}

std::string fmt(const char* format, double a) {
    char text[64];
    std::snprintf(text, sizeof text, format, a);
    return text;
}

void write_results(const Options& o, double gemm_before, double gemm_after, const std::vector<Row>& rows,
                   const MemoryResult& memory, double load_before) {
    const double gemm = std::max(gemm_before, gemm_after);
    if (o.out_dir.empty()) return;
    const std::string stem = o.out_dir + "/cpu-" + o.machine + "-" + today();
    std::ofstream json(stem + ".json");
    json << "{\n  \"machine\": \"" << o.machine << "\",\n  \"date\": \"" << today() << "\",\n  \"threads\": " << o.threads
         << ",\n  \"batch\": " << o.batch << ",\n  \"heads\": " << o.heads << ",\n  \"reps\": " << o.reps
         << ",\n  \"eigen_gemm_gflops\": " << fmt("%.1f", gemm) << ",\n  \"eigen_gemm_gflops_before\": "
         << fmt("%.1f", gemm_before) << ",\n  \"eigen_gemm_gflops_after\": " << fmt("%.1f", gemm_after)
         << ",\n  \"load_average_before\": " << fmt("%.2f", load_before)
         << ",\n  \"load_average_after\": " << fmt("%.2f", load_average()) << ",\n";
    if (memory.forward_kib >= 0)
        json << "  \"extra_memory_kib\": {\"n\": 65536, \"d\": 64, \"forward\": " << memory.forward_kib
             << ", \"backward\": " << memory.backward_kib << "},\n";
    json << "  \"rows\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        json << "    {\"dtype\": \"" << r.dtype << "\", \"n\": " << r.n << ", \"d\": " << r.d << ", \"causal\": " << r.causal
             << ", \"fwd_gflops\": " << fmt("%.1f", r.fwd_gflops) << ", \"bwd_gflops\": " << fmt("%.1f", r.bwd_gflops)
             << ", \"fwd_ratio_to_gemm\": " << fmt("%.3f", r.fwd_gflops / gemm)
             << ", \"bwd_ratio_to_gemm\": " << fmt("%.3f", r.bwd_gflops / gemm);
        if (r.naive_fwd_gflops > 0)
            json << ", \"naive_fwd_gflops\": " << fmt("%.1f", r.naive_fwd_gflops)
                 << ", \"naive_bwd_gflops\": " << fmt("%.1f", r.naive_bwd_gflops);
        json << "}" << (i + 1 < rows.size() ? "," : "") << "\n";
    }
    json << "  ]\n}\n";

    std::ofstream md(stem + ".md");
    md << "# fattn CPU benchmark, " << o.machine << ", " << today() << "\n\n"
       << "B=" << o.batch << ", H=" << o.heads << ", " << o.threads << " OpenMP threads, median of " << o.reps
       << " runs. Eigen fp32 GEMM (best of 1024^3, 1536^3, 2048^3, measured before and after the rows: "
       << fmt("%.1f", gemm_before) << " and " << fmt("%.1f", gemm_after) << "): **" << fmt("%.1f", gemm)
       << " GFLOP/s**, the ratios' denominator. 1-minute load average " << fmt("%.2f", load_before)
       << " before, " << fmt("%.2f", load_average()) << " after.\n\n"
       << "| dtype | N | D | causal | fwd GFLOP/s | fwd / GEMM | bwd GFLOP/s | bwd / GEMM | naive fwd | naive bwd |\n"
       << "|---|---|---|---|---|---|---|---|---|---|\n";
    for (const Row& r : rows) {
        md << "| " << r.dtype << " | " << r.n << " | " << r.d << " | " << r.causal << " | " << fmt("%.1f", r.fwd_gflops)
           << " | " << fmt("%.2f", r.fwd_gflops / gemm) << " | " << fmt("%.1f", r.bwd_gflops) << " | "
           << fmt("%.2f", r.bwd_gflops / gemm) << " | "
           << (r.naive_fwd_gflops > 0 ? fmt("%.1f", r.naive_fwd_gflops) : "-") << " | "
           << (r.naive_bwd_gflops > 0 ? fmt("%.1f", r.naive_bwd_gflops) : "-") << " |\n";
    }
    if (memory.forward_kib >= 0)
        md << "\nExtra memory at N=65536, D=64, B=1, H=1 (peak RSS minus tensors): forward "
           << fmt("%.1f", memory.forward_kib / 1024.0) << " MiB, backward " << fmt("%.1f", memory.backward_kib / 1024.0)
           << " MiB.\n";
    std::fprintf(stderr, "wrote %s.json and %s.md\n", stem.c_str(), stem.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse_options(argc, argv);
    const double load_before = load_average();
    omp_set_num_threads(o.threads);

    // First, while the process is still small: the extra-memory measurement.
    const MemoryResult memory = o.memory ? measure_memory(o.threads) : MemoryResult{};

    // The ceiling is measured before and after the attention rows and the better one counts:
    // on a shared machine a burst of load during one measurement only makes the ratios stricter.
    std::fprintf(stderr, "Eigen GEMM ceiling ...\n");
    const double gemm_before = eigen_gemm_gflops(o.threads, o.reps);

    fattn_handle_t handle = nullptr;
    check(fattn_create(&handle, FATTN_BACKEND_CPU), "fattn_create");
    std::mt19937 rng(1);
    std::vector<Row> rows;
    const std::size_t total = o.dtypes.size() * o.seqlens.size() * o.head_dims.size() * o.causal.size();
    for (int dtype : o.dtypes)
        for (int64_t n : o.seqlens)
            for (int64_t d : o.head_dims)
                for (int causal : o.causal) {
                    std::fprintf(stderr, "[%zu/%zu] %s N=%lld D=%lld causal=%d\n", rows.size() + 1, total,
                                 dtype_name(dtype), static_cast<long long>(n), static_cast<long long>(d), causal);
                    Problem p(dtype, o.batch, o.heads, n, d, rng);
                    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
                    desc.causal = causal;
                    const double flops = attention_flops(o.batch, o.heads, n, d, causal != 0);
                    Row r{dtype_name(dtype), n, d, causal, 0, 0};
                    r.fwd_gflops = flops / median_seconds(o.reps, [&] { p.forward(handle, desc); }) * 1e-9;
                    r.bwd_gflops = 2.5 * flops / median_seconds(o.reps, [&] { p.backward(handle, desc); }) * 1e-9;
                    if (o.naive && dtype == FATTN_DTYPE_F32) {
                        NaiveAttention naive(n, d, causal != 0);
                        const int64_t head = n * d;
                        auto per_head = [&](auto&& body) {
                            for (int64_t h = 0; h < o.batch * o.heads; ++h) body(h * head);
                        };
                        r.naive_fwd_gflops = flops / median_seconds(o.reps, [&] {
                            per_head([&](int64_t at) { naive.forward(p.q.f32() + at, p.k.f32() + at, p.v.f32() + at, p.o.f32() + at); });
                        }) * 1e-9;
                        r.naive_bwd_gflops = 2.5 * flops / median_seconds(o.reps, [&] {
                            per_head([&](int64_t at) {
                                naive.backward(p.q.f32() + at, p.k.f32() + at, p.v.f32() + at, p.o.f32() + at,
                                               p.dout.f32() + at, p.dq.f32() + at, p.dk.f32() + at, p.dv.f32() + at);
                            });
                        }) * 1e-9;
                    }
                    rows.push_back(r);
                }
    fattn_destroy(handle);
    std::fprintf(stderr, "Eigen GEMM ceiling again ...\n");
    const double gemm_after = eigen_gemm_gflops(o.threads, o.reps);
    const double gemm = std::max(gemm_before, gemm_after);

    std::printf("Eigen fp32 GEMM ceiling: %.1f GFLOP/s (%d threads; %.1f before the rows, %.1f after)\n", gemm,
                o.threads, gemm_before, gemm_after);
    std::printf("1-minute load average: %.2f before, %.2f after\n", load_before, load_average());
    std::printf("%-5s %6s %4s %6s | %9s %6s | %9s %6s | %9s %9s\n", "dtype", "N", "D", "causal", "fwd GF/s", "/GEMM",
                "bwd GF/s", "/GEMM", "naive fwd", "naive bwd");
    for (const Row& r : rows)
        std::printf("%-5s %6lld %4lld %6d | %9.1f %6.2f | %9.1f %6.2f | %9.1f %9.1f\n", r.dtype.c_str(),
                    static_cast<long long>(r.n), static_cast<long long>(r.d), r.causal, r.fwd_gflops, r.fwd_gflops / gemm,
                    r.bwd_gflops, r.bwd_gflops / gemm, r.naive_fwd_gflops, r.naive_bwd_gflops);
    if (memory.forward_kib >= 0)
        std::printf("extra memory at N=65536 D=64 B=1 H=1: forward %.1f MiB, backward %.1f MiB\n",
                    memory.forward_kib / 1024.0, memory.backward_kib / 1024.0);
    write_results(o, gemm_before, gemm_after, rows, memory, load_before);
    return 0;
}
