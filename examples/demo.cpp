// fattn demo: the library's main job end to end. Picks the backend the machine offers
// (FATTN_BACKEND_AUTO), runs attention forward and backward on a default problem, checks the
// results against a float64 reference, and prints the error and the throughput.
//
//   fattn_demo [--quick] [--backend auto|cpu|cuda] [--causal 0|1] [--n N] [--d D] [--heads H]
//
// The CPU default is f32, B=1, H=8, N=2048, D=64; the CUDA default is bf16, B=4, H=16, N=4096,
// D=128. The reference is computed for one (batch, head) pair in full (forward and backward) and
// for sampled rows of every head (forward), so the check stays cheap at any size.
#include <fattn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#ifdef FATTN_DEMO_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

struct Options {
    fattn_backend_t backend = FATTN_BACKEND_AUTO;
    bool quick = false;
    int causal = 1;
    int64_t batch = 0, heads = 0, seqlen = 0, head_dim = 0;  // 0: backend default
};

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "fattn_demo: %s\n", what);
    std::exit(1);
}

void check(fattn_status_t status, const char* call) {
    if (status == FATTN_SUCCESS) return;
    std::fprintf(stderr, "fattn_demo: %s failed: %s: %s\n", call, fattn_status_string(status), fattn_last_error());
    std::exit(1);
}

Options parse(int argc, char** argv) {
    Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) die(("missing value after " + arg).c_str());
            return argv[++i];
        };
        if (arg == "--quick") options.quick = true;
        else if (arg == "--causal") options.causal = std::atoi(value()) != 0;
        else if (arg == "--n") options.seqlen = std::atoll(value());
        else if (arg == "--d") options.head_dim = std::atoll(value());
        else if (arg == "--heads") options.heads = std::atoll(value());
        else if (arg == "--backend") {
            const std::string name = value();
            if (name == "auto") options.backend = FATTN_BACKEND_AUTO;
            else if (name == "cpu") options.backend = FATTN_BACKEND_CPU;
            else if (name == "cuda") options.backend = FATTN_BACKEND_CUDA;
            else die("--backend takes auto, cpu or cuda");
        } else {
            std::printf("usage: fattn_demo [--quick] [--backend auto|cpu|cuda] [--causal 0|1] [--n N] [--d D] [--heads H]\n");
            std::exit(arg == "--help" ? 0 : 2);
        }
    }
    return options;
}

// bf16 storage on the host: round-to-nearest-even truncation of the float's bits.
uint16_t to_bf16(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>(bits >> 16);
}
float from_bf16(uint16_t value) {
    const uint32_t bits = static_cast<uint32_t>(value) << 16;
    float result;
    std::memcpy(&result, &bits, 4);
    return result;
}

// A [B,H,N,D] tensor held as float on the host (already rounded to the storage dtype), plus its
// storage bytes on the backend's side.
struct Tensor {
    int64_t shape[4];
    std::vector<float> host;  // values as the library sees them
    void* data = nullptr;     // storage the library reads or writes
    fattn_dtype_t dtype = FATTN_DTYPE_F32;
    bool on_device = false;

    int64_t elements() const { return shape[0] * shape[1] * shape[2] * shape[3]; }
    size_t element_size() const { return dtype == FATTN_DTYPE_F32 ? 4 : 2; }
    fattn_tensor_t view() const {
        fattn_tensor_t t{};
        t.data = data;
        t.dtype = dtype;
        for (int i = 0; i < 4; ++i) t.shape[i] = shape[i];
        t.strides[3] = 1;
        for (int i = 2; i >= 0; --i) t.strides[i] = t.strides[i + 1] * shape[i + 1];
        return t;
    }
    float at(int64_t b, int64_t h, int64_t n, int64_t d) const {
        return host[((b * shape[1] + h) * shape[2] + n) * shape[3] + d];
    }
};

void* allocate(size_t bytes, bool on_device) {
    void* pointer = nullptr;
#ifdef FATTN_DEMO_WITH_CUDA
    if (on_device) {
        if (cudaMalloc(&pointer, bytes) != cudaSuccess) die("cudaMalloc failed");
        return pointer;
    }
#else
    if (on_device) die("this demo was built without CUDA support");
#endif
    pointer = std::malloc(bytes);
    if (pointer == nullptr) die("out of host memory");
    return pointer;
}

void release(Tensor& tensor) {
#ifdef FATTN_DEMO_WITH_CUDA
    if (tensor.on_device) {
        cudaFree(tensor.data);
        return;
    }
#endif
    std::free(tensor.data);
}

// Copies between the host and the tensor's storage, which is device memory for the CUDA backend.
void transfer(void* destination, const void* source, size_t bytes, bool on_device, bool upload) {
#ifdef FATTN_DEMO_WITH_CUDA
    if (on_device) {
        if (cudaMemcpy(destination, source, bytes, upload ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost) !=
            cudaSuccess)
            die("cudaMemcpy failed");
        return;
    }
#else
    (void)on_device;
    (void)upload;
#endif
    std::memcpy(destination, source, bytes);
}

Tensor make_tensor(std::initializer_list<int64_t> shape, fattn_dtype_t dtype, bool on_device, std::mt19937_64* rng) {
    Tensor tensor;
    std::copy(shape.begin(), shape.end(), tensor.shape);
    tensor.dtype = dtype;
    tensor.on_device = on_device;
    tensor.host.assign(static_cast<size_t>(tensor.elements()), 0.0f);
    tensor.data = allocate(tensor.host.size() * tensor.element_size(), on_device);
    if (rng != nullptr) {
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (float& x : tensor.host) x = dtype == FATTN_DTYPE_BF16 ? from_bf16(to_bf16(normal(*rng))) : normal(*rng);
    }
    return tensor;
}

// Moves host values into storage (upload) or storage into host values (download).
void sync_storage(Tensor& tensor, bool upload) {
    const size_t n = tensor.host.size();
    if (tensor.dtype == FATTN_DTYPE_F32) {
        if (upload) transfer(tensor.data, tensor.host.data(), n * 4, tensor.on_device, true);
        else transfer(tensor.host.data(), tensor.data, n * 4, tensor.on_device, false);
        return;
    }
    std::vector<uint16_t> staged(n);
    if (upload) {
        for (size_t i = 0; i < n; ++i) staged[i] = to_bf16(tensor.host[i]);
        transfer(tensor.data, staged.data(), n * 2, tensor.on_device, true);
    } else {
        transfer(staged.data(), tensor.data, n * 2, tensor.on_device, false);
        for (size_t i = 0; i < n; ++i) tensor.host[i] = from_bf16(staged[i]);
    }
}

// float64 reference for one (batch, head): o, and dq/dk/dv given dout (bottom-right causal mask).
struct HeadReference {
    std::vector<double> o, dq, dk, dv;
};

HeadReference reference_head(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, int64_t b,
                             int64_t h, bool causal, double scale, bool with_backward) {
    const int64_t n_q = q.shape[2], n_k = k.shape[2], d = q.shape[3];
    const int64_t kv_head = h / (q.shape[1] / k.shape[1]);
    HeadReference ref;
    ref.o.assign(n_q * d, 0.0);
    if (with_backward) {
        ref.dq.assign(n_q * d, 0.0);
        ref.dk.assign(n_k * d, 0.0);
        ref.dv.assign(n_k * d, 0.0);
    }
    std::vector<double> p(n_k), dp(n_k);
    for (int64_t i = 0; i < n_q; ++i) {
        const int64_t visible = causal ? std::min(n_k, i + (n_k - n_q) + 1) : n_k;
        if (visible <= 0) continue;
        double row_max = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
            double s = 0.0;
            for (int64_t c = 0; c < d; ++c) s += double(q.at(b, h, i, c)) * k.at(b, kv_head, j, c);
            p[j] = s * scale;
            row_max = std::max(row_max, p[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < visible; ++j) sum += (p[j] = std::exp(p[j] - row_max));
        for (int64_t j = 0; j < visible; ++j) {
            p[j] /= sum;
            for (int64_t c = 0; c < d; ++c) ref.o[i * d + c] += p[j] * v.at(b, kv_head, j, c);
        }
        if (!with_backward) continue;
        double delta = 0.0;
        for (int64_t c = 0; c < d; ++c) delta += double(dout.at(b, h, i, c)) * ref.o[i * d + c];
        for (int64_t j = 0; j < visible; ++j) {
            double dpj = 0.0;
            for (int64_t c = 0; c < d; ++c) dpj += double(dout.at(b, h, i, c)) * v.at(b, kv_head, j, c);
            const double ds = p[j] * (dpj - delta) * scale;
            for (int64_t c = 0; c < d; ++c) {
                ref.dv[j * d + c] += p[j] * dout.at(b, h, i, c);
                ref.dq[i * d + c] += ds * k.at(b, kv_head, j, c);
                ref.dk[j * d + c] += ds * q.at(b, h, i, c);
            }
        }
    }
    return ref;
}

// Relative error ||x - ref|| / ||ref|| over one head of `tensor`.
double relative_error(const Tensor& tensor, int64_t b, int64_t h, const std::vector<double>& ref) {
    double diff = 0.0, norm = 0.0;
    const int64_t n = tensor.shape[2], d = tensor.shape[3];
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t c = 0; c < d; ++c) {
            const double r = ref[i * d + c];
            const double e = tensor.at(b, h, i, c) - r;
            diff += e * e;
            norm += r * r;
        }
    }
    return std::sqrt(diff / std::max(norm, 1e-300));
}

template <typename Call>
double median_seconds(int repetitions, fattn_backend_t backend, Call&& call) {
    std::vector<double> times;
    for (int r = 0; r < repetitions; ++r) {
        const auto start = std::chrono::steady_clock::now();
        call();
#ifdef FATTN_DEMO_WITH_CUDA
        if (backend == FATTN_BACKEND_CUDA && cudaDeviceSynchronize() != cudaSuccess) die("CUDA error while timing");
#else
        (void)backend;
#endif
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    Options options = parse(argc, argv);
    fattn_handle_t handle = nullptr;
    check(fattn_create(&handle, options.backend), "fattn_create");
    fattn_backend_t backend;
    check(fattn_get_backend(handle, &backend), "fattn_get_backend");
    const bool on_device = backend == FATTN_BACKEND_CUDA;

    const fattn_dtype_t dtype = on_device ? FATTN_DTYPE_BF16 : FATTN_DTYPE_F32;
    const int64_t batch = options.batch ? options.batch : (on_device && !options.quick ? 4 : 1);
    const int64_t heads = options.heads ? options.heads : (options.quick ? 2 : (on_device ? 16 : 8));
    const int64_t seqlen = options.seqlen ? options.seqlen : (options.quick ? 257 : (on_device ? 4096 : 2048));
    const int64_t head_dim = options.head_dim ? options.head_dim : (on_device ? 128 : 64);

    std::printf("fattn %s, backend %s, %s, B=%lld H=%lld N=%lld D=%lld, %s\n", fattn_version_string(),
                on_device ? "CUDA" : "CPU", dtype == FATTN_DTYPE_F32 ? "f32" : "bf16", (long long)batch,
                (long long)heads, (long long)seqlen, (long long)head_dim, options.causal ? "causal" : "non-causal");

    std::mt19937_64 rng(std::random_device{}());
    Tensor q = make_tensor({batch, heads, seqlen, head_dim}, dtype, on_device, &rng);
    Tensor k = make_tensor({batch, heads, seqlen, head_dim}, dtype, on_device, &rng);
    Tensor v = make_tensor({batch, heads, seqlen, head_dim}, dtype, on_device, &rng);
    Tensor dout = make_tensor({batch, heads, seqlen, head_dim}, dtype, on_device, &rng);
    Tensor o = make_tensor({batch, heads, seqlen, head_dim}, dtype, on_device, nullptr);
    Tensor dq = make_tensor({batch, heads, seqlen, head_dim}, dtype, on_device, nullptr);
    Tensor dk = make_tensor({batch, heads, seqlen, head_dim}, dtype, on_device, nullptr);
    Tensor dv = make_tensor({batch, heads, seqlen, head_dim}, dtype, on_device, nullptr);
    Tensor lse = make_tensor({batch, heads, seqlen, 1}, FATTN_DTYPE_F32, on_device, nullptr);
    for (Tensor* input : {&q, &k, &v, &dout}) sync_storage(*input, true);

    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    desc.causal = options.causal;
    const fattn_tensor_t tq = q.view(), tk = k.view(), tv = v.view(), to = o.view(), tdo = dout.view(),
                         tlse = lse.view(), tdq = dq.view(), tdk = dk.view(), tdv = dv.view();

    const int repetitions = options.quick ? 3 : 7;
    check(fattn_forward(handle, &desc, &tq, &tk, &tv, &to, &tlse), "fattn_forward");  // warm-up
    const double forward_seconds = median_seconds(repetitions, backend, [&] {
        check(fattn_forward(handle, &desc, &tq, &tk, &tv, &to, &tlse), "fattn_forward");
    });
    check(fattn_backward(handle, &desc, &tq, &tk, &tv, &to, &tdo, &tlse, &tdq, &tdk, &tdv), "fattn_backward");
    const double backward_seconds = median_seconds(repetitions, backend, [&] {
        check(fattn_backward(handle, &desc, &tq, &tk, &tv, &to, &tdo, &tlse, &tdq, &tdk, &tdv), "fattn_backward");
    });
    for (Tensor* output : {&o, &dq, &dk, &dv}) sync_storage(*output, false);

    // Check the last (batch, head) pair in full: forward and all three gradients.
    const double scale = 1.0 / std::sqrt(double(head_dim));
    const int64_t b = batch - 1, h = heads - 1;
    const HeadReference ref = reference_head(q, k, v, dout, b, h, options.causal, scale, true);
    const double errors[4] = {relative_error(o, b, h, ref.o), relative_error(dq, b, h, ref.dq),
                              relative_error(dk, b, h, ref.dk), relative_error(dv, b, h, ref.dv)};
    // f32 accumulation lands far under 1e-4; bf16 storage rounding of the outputs alone is ~3e-3.
    const double tolerance = dtype == FATTN_DTYPE_F32 ? 1e-4 : 2e-2;
    const bool correct = std::all_of(std::begin(errors), std::end(errors), [&](double e) { return e < tolerance; });

    const double flops_forward = 4.0 * batch * heads * double(seqlen) * seqlen * head_dim * (options.causal ? 0.5 : 1.0);
    const double flops_backward = 2.5 * flops_forward;
    const double unit = on_device ? 1e12 : 1e9;
    const char* unit_name = on_device ? "TFLOP/s" : "GFLOP/s";
    std::printf("relative error vs float64 reference (batch %lld, head %lld): o %.2e  dq %.2e  dk %.2e  dv %.2e  (limit %.0e)\n",
                (long long)b, (long long)h, errors[0], errors[1], errors[2], errors[3], tolerance);
    std::printf("forward : %9.3f ms  %8.1f %s\n", forward_seconds * 1e3, flops_forward / forward_seconds / unit, unit_name);
    std::printf("backward: %9.3f ms  %8.1f %s\n", backward_seconds * 1e3, flops_backward / backward_seconds / unit, unit_name);
    std::printf("%s\n", correct ? "PASSED" : "FAILED: error above the limit");

    for (Tensor* tensor : {&q, &k, &v, &dout, &o, &dq, &dk, &dv, &lse}) release(*tensor);
    check(fattn_destroy(handle), "fattn_destroy");
    return correct ? 0 : 1;
}
