// Every status path of the C ABI: handles, backends, versions, status text, per-thread error
// messages, and every way fattn_forward / fattn_backward must refuse bad arguments.
// A refused call must return the documented status, leave a message that names the argument and
// its value in fattn_last_error(), and write nothing: every output buffer is poisoned beforehand
// and compared byte for byte afterwards.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

using namespace fattn_test;

namespace {

// The tensors of one valid forward+backward call: B=2, Hq=Hkv=4, Nq=5, Nk=6, D=8, f32, [B,H,N,D].
// Shapes are small, distinct per dimension, and > 1 so every mismatch can be made by shrinking one
// extent (a shrunk tensor still lies inside its buffer, should validation ever let it through).
enum Arg { Q, K, V, O, LSE, DOUT, DQ, DK, DV, kArgCount };
const char* const kArgNames[kArgCount] = {"q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv"};
const std::vector<Arg> kForwardArgs = {Q, K, V, O, LSE};
const std::vector<Arg> kBackwardArgs = {Q, K, V, O, DOUT, LSE, DQ, DK, DV};

Shape shape_of(Arg arg) {
    const Shape q_shape{2, 4, 5, 8}, kv_shape{2, 4, 6, 8};
    switch (arg) {
        case K: case V: case DK: case DV: return kv_shape;
        case LSE: return {2, 4, 5, 1};
        default: return q_shape;
    }
}

class AbiCall {
public:
    AbiCall() {
        REQUIRE(fattn_create(&owned_handle_, FATTN_BACKEND_CPU) == FATTN_SUCCESS);
        handle = owned_handle_;
        std::mt19937_64 rng = random_stream("abi");
        for (int arg = 0; arg < kArgCount; ++arg)
            storage_[arg] = HostTensor(FATTN_DTYPE_F32, shape_of(static_cast<Arg>(arg)), Layout::BHND);
        for (Arg arg : {Q, K, V, DOUT}) storage_[arg].fill_random(rng);
        for (Arg arg : {O, LSE, DQ, DK, DV}) storage_[arg].poison();
        for (int arg = 0; arg < kArgCount; ++arg) {
            tensors[arg] = storage_[arg].view();
            pointers[arg] = &tensors[arg];
            before_[arg] = storage_[arg].snapshot();
        }
    }
    ~AbiCall() { fattn_destroy(owned_handle_); }
    AbiCall(const AbiCall&) = delete;
    AbiCall& operator=(const AbiCall&) = delete;

    fattn_status_t forward() const {
        return fattn_forward(handle, desc_pointer, pointers[Q], pointers[K], pointers[V], pointers[O], pointers[LSE]);
    }
    fattn_status_t backward() const {
        return fattn_backward(handle, desc_pointer, pointers[Q], pointers[K], pointers[V], pointers[O], pointers[DOUT],
                              pointers[LSE], pointers[DQ], pointers[DK], pointers[DV]);
    }
    // Names of the tensors whose bytes changed since construction.
    std::string written_tensors() const {
        std::string written;
        for (int arg = 0; arg < kArgCount; ++arg)
            if (!storage_[arg].same_bytes(before_[arg])) written += std::string(kArgNames[arg]) + ' ';
        return written;
    }
    HostTensor& storage(Arg arg) { return storage_[arg]; }

    fattn_handle_t handle = nullptr;  // what the calls pass: a breakage may change it
    fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    const fattn_attention_desc_t* desc_pointer = &desc;
    fattn_tensor_t tensors[kArgCount];
    const fattn_tensor_t* pointers[kArgCount];

private:
    fattn_handle_t owned_handle_ = nullptr;
    HostTensor storage_[kArgCount];
    std::vector<unsigned char> before_[kArgCount];
};

// One way to break a valid call, and what fattn must answer.
struct Breakage {
    std::string label;
    std::function<void(AbiCall&)> apply;
    std::string message;  // must appear in fattn_last_error()
    fattn_status_t status = FATTN_ERROR_INVALID_ARGUMENT;
};

enum class Entry { Forward, Backward };

void expect_refused(Entry entry, const Breakage& breakage) {
    AbiCall call;
    breakage.apply(call);
    const fattn_status_t status = entry == Entry::Forward ? call.forward() : call.backward();
    const std::string message = fattn_last_error();
    INFO(std::string(entry == Entry::Forward ? "fattn_forward, " : "fattn_backward, ") << breakage.label
         << ": status " << status << ", message \"" << message << '"');
    CHECK(status == breakage.status);
    CHECK(message.find(breakage.message) != std::string::npos);
    CHECK(call.written_tensors() == "");
}

std::string str(int64_t value) { return std::to_string(value); }

// Breakages of one tensor argument that every entry point must refuse the same way.
std::vector<Breakage> tensor_breakages(Arg arg) {
    const std::string name = kArgNames[arg];
    std::vector<Breakage> list;
    auto add = [&](std::string label, std::function<void(fattn_tensor_t&)> change, std::string message) {
        list.push_back({name + ": " + label, [arg, change](AbiCall& call) { change(call.tensors[arg]); }, message});
    };
    add("data NULL", [](fattn_tensor_t& t) { t.data = nullptr; }, name + ".data is NULL");
    for (int32_t dtype : {3, -1, 1000})
        add("dtype " + str(dtype), [dtype](fattn_tensor_t& t) { t.dtype = dtype; }, name + ".dtype=" + str(dtype));
    add("reserved != 0", [](fattn_tensor_t& t) { t.reserved = 1; }, name + ".reserved=1");
    for (int dim = 0; dim < 4; ++dim) {
        for (int64_t extent : {int64_t{0}, int64_t{-3}})
            add("shape[" + str(dim) + "]=" + str(extent), [dim, extent](fattn_tensor_t& t) { t.shape[dim] = extent; },
                name + ".shape[" + str(dim) + "]=" + str(extent));
        if (dim < 3)
            add("negative stride " + str(dim), [dim](fattn_tensor_t& t) { t.strides[dim] = -1; },
                name + ".strides[" + str(dim) + "]=-1");
    }
    for (int64_t stride : {int64_t{0}, int64_t{2}})
        add("strides[3]=" + str(stride), [stride](fattn_tensor_t& t) { t.strides[3] = stride; },
            name + ".strides[3]=" + str(stride));
    add("misaligned data", [](fattn_tensor_t& t) { t.data = static_cast<char*>(t.data) + 2; }, "not aligned");
    add("element offsets overflow int64",
        [](fattn_tensor_t& t) {
            t.shape[0] = int64_t{1} << 40;
            t.strides[0] = int64_t{1} << 40;
        },
        name + " is too large");
    add("byte extent overflows",
        [](fattn_tensor_t& t) {
            t.shape[0] = 2;
            t.strides[0] = std::numeric_limits<int64_t>::max() / 2;
        },
        name + " is too large");
    add("last element offset is INT64_MAX (one past it overflows)",
        [](fattn_tensor_t& t) {
            int64_t inner_reach = 0;
            for (int dim = 1; dim < 4; ++dim) inner_reach += t.strides[dim] * (t.shape[dim] - 1);
            t.shape[0] = 2;
            t.strides[0] = std::numeric_limits<int64_t>::max() - inner_reach;
        },
        name + " is too large");
    // A shape that disagrees with the others, one dimension at a time; the message names the new
    // extent whichever tensor it blames it on. lse's last extent must be 1.
    for (int dim = 0; dim < 4; ++dim) {
        const int64_t changed = arg == LSE && dim == 3 ? 2 : shape_of(arg)[dim] - 1;
        add("mismatched shape[" + str(dim) + "]", [dim, changed](fattn_tensor_t& t) { t.shape[dim] = changed; },
            name + ".shape[" + str(dim) + "]=" + str(changed));
    }
    // One dtype for all tensors (lse: always f32).
    const int32_t other_dtype = FATTN_DTYPE_F16;
    add("mixed dtype", [other_dtype](fattn_tensor_t& t) { t.dtype = other_dtype; }, name + ".dtype=" + str(other_dtype));
    return list;
}

// Breakages of the handle and descriptor, common to both entry points.
std::vector<Breakage> call_breakages() {
    auto desc_change = [](std::string label, std::function<void(fattn_attention_desc_t&)> change, std::string message) {
        return Breakage{label, [change](AbiCall& call) { change(call.desc); }, message};
    };
    const float inf = std::numeric_limits<float>::infinity();
    return {
        {"handle NULL", [](AbiCall& call) { call.handle = nullptr; }, "handle is NULL"},
        {"desc NULL", [](AbiCall& call) { call.desc_pointer = nullptr; }, "desc is NULL"},
        desc_change("struct_size 11", [](fattn_attention_desc_t& d) { d.struct_size = 11; }, "desc.struct_size=11"),
        desc_change("struct_size 0", [](fattn_attention_desc_t& d) { d.struct_size = 0; }, "desc.struct_size=0"),
        desc_change("causal 2", [](fattn_attention_desc_t& d) { d.causal = 2; }, "desc.causal=2"),
        desc_change("causal -1", [](fattn_attention_desc_t& d) { d.causal = -1; }, "desc.causal=-1"),
        desc_change("negative scale", [](fattn_attention_desc_t& d) { d.softmax_scale = -0.5f; }, "desc.softmax_scale=-0.5"),
        desc_change("infinite scale", [inf](fattn_attention_desc_t& d) { d.softmax_scale = inf; }, "desc.softmax_scale=inf"),
        desc_change("-infinite scale", [inf](fattn_attention_desc_t& d) { d.softmax_scale = -inf; }, "desc.softmax_scale=-inf"),
        desc_change("NaN scale", [](fattn_attention_desc_t& d) { d.softmax_scale = std::nanf(""); }, "desc.softmax_scale=nan"),
        desc_change("window_left -2", [](fattn_attention_desc_t& d) { d.window_left = -2; }, "desc.window_left=-2"),
        desc_change("window_right -3", [](fattn_attention_desc_t& d) { d.window_right = -3; }, "desc.window_right=-3"),
        desc_change("causal with window_right 2",
                    [](fattn_attention_desc_t& d) {
                        d.causal = 1;
                        d.window_right = 2;
                    },
                    "desc.window_right=2"),
        desc_change("deterministic 2", [](fattn_attention_desc_t& d) { d.deterministic = 2; }, "desc.deterministic=2"),
    };
}

// Points `target` at the memory of `source`. Each use keeps the moved tensor within the other's
// buffer, so exactly one overlap exists whatever the heap layout.
Breakage alias(std::string label, Arg target, Arg source, std::string message) {
    return {label, [target, source](AbiCall& call) { call.tensors[target].data = call.tensors[source].data; }, message};
}
Breakage zero_stride(Arg target, int dim) {
    const std::string name = kArgNames[target];
    return {name + ".strides[" + str(dim) + "]=0 (elements share memory)",
            [target, dim](AbiCall& call) { call.tensors[target].strides[dim] = 0; },
            name + ".strides[" + str(dim) + "]=0"};
}

// Refuses the tensor breakages of every argument of `entry`, the handle and descriptor breakages,
// and the entry's own `overlaps` (outputs sharing memory with inputs or with themselves).
void expect_all_refused(Entry entry, const std::vector<Arg>& args, const std::vector<Breakage>& overlaps) {
    for (Arg arg : args) {
        if (!(entry == Entry::Forward && arg == LSE))  // lse is optional in the forward only
            expect_refused(entry, {std::string(kArgNames[arg]) + " NULL",
                                   [arg](AbiCall& call) { call.pointers[arg] = nullptr; },
                                   std::string(kArgNames[arg]) + " is NULL"});
        for (const Breakage& breakage : tensor_breakages(arg)) expect_refused(entry, breakage);
    }
    for (const Breakage& breakage : call_breakages()) expect_refused(entry, breakage);
    for (const Breakage& breakage : overlaps) expect_refused(entry, breakage);
}

}  // namespace

TEST_CASE("the valid baseline call succeeds and writes every output") {
    AbiCall call;
    REQUIRE(call.forward() == FATTN_SUCCESS);
    REQUIRE(call.backward() == FATTN_SUCCESS);
    CHECK(call.written_tensors() == "o lse dq dk dv ");
}

TEST_CASE("fattn_forward refuses every bad argument and writes nothing") {
    expect_all_refused(Entry::Forward, kForwardArgs,
                       {alias("o is q", O, Q, "o overlaps the memory of input q"),
                        alias("o is v", O, V, "o overlaps the memory of input v"),
                        alias("lse inside o", LSE, O, "lse overlaps the memory of input o"), zero_stride(O, 0),
                        zero_stride(O, 2), zero_stride(LSE, 1)});
}

TEST_CASE("fattn_backward refuses every bad argument and writes nothing") {
    expect_all_refused(Entry::Backward, kBackwardArgs,
                       {alias("dq is dout", DQ, DOUT, "dq overlaps the memory of input dout"),
                        alias("dk is k", DK, K, "dk overlaps the memory of input k"),
                        alias("lse inside dq", LSE, DQ, "dq overlaps the memory of input lse"),
                        alias("dq inside dk", DQ, DK, "dk.data is the same memory as dq.data"),
                        alias("dv is dk", DV, DK, "dv.data is the same memory as dk.data"), zero_stride(DQ, 0),
                        zero_stride(DK, 1), zero_stride(DV, 2)});
}

TEST_CASE("a descriptor from an older caller (struct_size 12) gets defaults for the later fields") {
    AbiCall full;
    REQUIRE(full.forward() == FATTN_SUCCESS);

    AbiCall old_caller;
    // Bytes past the old struct_size hold garbage the library must not read: invalid values.
    old_caller.desc = {12, 0, 0.0f, -7, -9, 5};
    REQUIRE(old_caller.forward() == FATTN_SUCCESS);
    CHECK(old_caller.storage(O).same_bytes(full.storage(O).snapshot()));
    CHECK(old_caller.storage(LSE).same_bytes(full.storage(LSE).snapshot()));
    REQUIRE(old_caller.backward() == FATTN_SUCCESS);
    REQUIRE(full.backward() == FATTN_SUCCESS);
    CHECK(old_caller.storage(DQ).same_bytes(full.storage(DQ).snapshot()));
}

TEST_CASE("head_dim 257 is FATTN_ERROR_UNSUPPORTED on the CPU backend, with nothing written") {
    fattn_handle_t handle = nullptr;
    REQUIRE(fattn_create(&handle, FATTN_BACKEND_CPU) == FATTN_SUCCESS);
    std::mt19937_64 rng = random_stream("head_dim 257");
    ProblemTensors tensors(Problem(FATTN_DTYPE_F32, 3, 4, 257), rng);
    const fattn_tensor_t q = tensors.q.view(), k = tensors.k.view(), v = tensors.v.view(), o = tensors.o.view(),
                         lse = tensors.lse.view(), dout = tensors.dout.view(), dq = tensors.dq.view(),
                         dk = tensors.dk.view(), dv = tensors.dv.view();
    const auto o_before = tensors.o.snapshot(), lse_before = tensors.lse.snapshot(), dq_before = tensors.dq.snapshot();
    const fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
    CHECK(fattn_forward(handle, &desc, &q, &k, &v, &o, &lse) == FATTN_ERROR_UNSUPPORTED);
    CHECK(std::string(fattn_last_error()).find("257") != std::string::npos);
    CHECK(fattn_backward(handle, &desc, &q, &k, &v, &o, &dout, &lse, &dq, &dk, &dv) == FATTN_ERROR_UNSUPPORTED);
    CHECK(std::string(fattn_last_error()).find("257") != std::string::npos);
    CHECK(tensors.o.same_bytes(o_before));
    CHECK(tensors.lse.same_bytes(lse_before));
    CHECK(tensors.dq.same_bytes(dq_before));
    fattn_destroy(handle);
}

TEST_CASE("handles: create, backend query, stream, destroy") {
    SUBCASE("the CPU backend is always available and chosen when asked for") {
        CHECK(fattn_backend_available(FATTN_BACKEND_CPU) == 1);
        CHECK(fattn_backend_available(FATTN_BACKEND_AUTO) == 1);
        fattn_handle_t handle = nullptr;
        REQUIRE(fattn_create(&handle, FATTN_BACKEND_CPU) == FATTN_SUCCESS);
        fattn_backend_t backend = FATTN_BACKEND_AUTO;
        CHECK(fattn_get_backend(handle, &backend) == FATTN_SUCCESS);
        CHECK(backend == FATTN_BACKEND_CPU);
        CHECK(fattn_set_stream(handle, nullptr) == FATTN_SUCCESS);
        int not_a_stream = 0;
        CHECK(fattn_set_stream(handle, &not_a_stream) == FATTN_ERROR_INVALID_ARGUMENT);
        CHECK(std::string(fattn_last_error()) != "");
        CHECK(fattn_get_backend(handle, nullptr) == FATTN_ERROR_INVALID_ARGUMENT);
        CHECK(std::string(fattn_last_error()).find("backend is NULL") != std::string::npos);
        CHECK(fattn_destroy(handle) == FATTN_SUCCESS);
    }
    SUBCASE("AUTO picks CUDA exactly when CUDA is available") {
        fattn_handle_t handle = nullptr;
        REQUIRE(fattn_create(&handle, FATTN_BACKEND_AUTO) == FATTN_SUCCESS);
        fattn_backend_t backend = FATTN_BACKEND_AUTO;
        CHECK(fattn_get_backend(handle, &backend) == FATTN_SUCCESS);
        CHECK(backend == (fattn_backend_available(FATTN_BACKEND_CUDA) ? FATTN_BACKEND_CUDA : FATTN_BACKEND_CPU));
        fattn_destroy(handle);
    }
    SUBCASE("the CUDA backend: NO_DEVICE with a reason when unavailable, a CUDA handle otherwise") {
        fattn_handle_t handle = nullptr;
        const fattn_status_t status = fattn_create(&handle, FATTN_BACKEND_CUDA);
        if (fattn_backend_available(FATTN_BACKEND_CUDA)) {
            REQUIRE(status == FATTN_SUCCESS);
            fattn_backend_t backend = FATTN_BACKEND_AUTO;
            CHECK(fattn_get_backend(handle, &backend) == FATTN_SUCCESS);
            CHECK(backend == FATTN_BACKEND_CUDA);
            CHECK(fattn_set_stream(handle, nullptr) == FATTN_SUCCESS);
            fattn_destroy(handle);
        } else {
            CHECK(status == FATTN_ERROR_NO_DEVICE);
            CHECK(handle == nullptr);
            CHECK(std::string(fattn_last_error()).find("CUDA") != std::string::npos);
        }
    }
    SUBCASE("invalid arguments") {
        fattn_handle_t handle = reinterpret_cast<fattn_handle_t>(&handle);  // garbage the call must clear
        CHECK(fattn_create(&handle, static_cast<fattn_backend_t>(7)) == FATTN_ERROR_INVALID_ARGUMENT);
        CHECK(handle == nullptr);
        CHECK(std::string(fattn_last_error()).find("backend=7") != std::string::npos);
        CHECK(fattn_create(nullptr, FATTN_BACKEND_CPU) == FATTN_ERROR_INVALID_ARGUMENT);
        CHECK(std::string(fattn_last_error()).find("handle is NULL") != std::string::npos);
        CHECK(fattn_backend_available(static_cast<fattn_backend_t>(7)) == 0);
        fattn_backend_t backend = FATTN_BACKEND_AUTO;
        CHECK(fattn_get_backend(nullptr, &backend) == FATTN_ERROR_INVALID_ARGUMENT);
        CHECK(fattn_set_stream(nullptr, nullptr) == FATTN_ERROR_INVALID_ARGUMENT);
        CHECK(std::string(fattn_last_error()).find("handle is NULL") != std::string::npos);
        CHECK(fattn_destroy(nullptr) == FATTN_SUCCESS);
    }
}

TEST_CASE("status strings: distinct text for every code, and text for unknown codes") {
    const fattn_status_t codes[] = {FATTN_SUCCESS,          FATTN_ERROR_INVALID_ARGUMENT, FATTN_ERROR_UNSUPPORTED,
                                    FATTN_ERROR_OUT_OF_MEMORY, FATTN_ERROR_NO_DEVICE,     FATTN_ERROR_BACKEND,
                                    FATTN_ERROR_INTERNAL};
    std::vector<std::string> texts;
    for (fattn_status_t code : codes) {
        const char* text = fattn_status_string(code);
        REQUIRE(text != nullptr);
        CHECK(std::strlen(text) > 0);
        texts.push_back(text);
    }
    const char* unknown = fattn_status_string(static_cast<fattn_status_t>(12345));
    REQUIRE(unknown != nullptr);
    CHECK(std::strlen(unknown) > 0);
    texts.push_back(unknown);
    for (size_t i = 0; i < texts.size(); ++i)
        for (size_t j = i + 1; j < texts.size(); ++j) CHECK(texts[i] != texts[j]);
}

TEST_CASE("the version matches the header") {
    CHECK(fattn_version_number() == FATTN_VERSION_NUMBER);
    const std::string expected = std::to_string(FATTN_VERSION_MAJOR) + '.' + std::to_string(FATTN_VERSION_MINOR) +
                                 '.' + std::to_string(FATTN_VERSION_PATCH);
    CHECK(std::string(fattn_version_string()) == expected);
}

TEST_CASE("fattn_last_error is per thread") {
    fattn_handle_t handle = nullptr;
    CHECK(fattn_create(&handle, static_cast<fattn_backend_t>(9)) == FATTN_ERROR_INVALID_ARGUMENT);
    std::string other_thread_message, fresh_thread_message = "not read";
    std::thread other([&] {
        fattn_attention_desc_t desc = FATTN_ATTENTION_DESC_INIT;
        desc.causal = 3;
        AbiCall call;
        call.desc = desc;
        call.forward();
        other_thread_message = fattn_last_error();
    });
    other.join();
    std::thread fresh([&] { fresh_thread_message = fattn_last_error(); });
    fresh.join();
    CHECK(std::string(fattn_last_error()).find("backend=9") != std::string::npos);
    CHECK(other_thread_message.find("desc.causal=3") != std::string::npos);
    CHECK(other_thread_message.find("backend=9") == std::string::npos);
    CHECK(fresh_thread_message == "");
}
