// fattn.hpp: a small header-only C++17 wrapper over the fattn C ABI: an RAII Handle, exceptions
// that carry the status and fattn_last_error(), an attention descriptor with named setters, and
// tensor views for the two common layouts. Copy it into your project; it needs only <fattn.h>.
#pragma once

#include <fattn.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace fattn {

// Every failed call throws an Error (or the subclass for its status) with the library's message.
class Error : public std::runtime_error {
public:
    Error(fattn_status_t status, const std::string& message)
        : std::runtime_error(std::string(fattn_status_string(status)) + ": " + message), status_(status) {}
    fattn_status_t status() const noexcept { return status_; }

private:
    fattn_status_t status_;
};

struct InvalidArgument : Error { using Error::Error; };
struct Unsupported : Error { using Error::Error; };
struct OutOfMemory : Error { using Error::Error; };
struct NoDevice : Error { using Error::Error; };
struct BackendError : Error { using Error::Error; };
struct InternalError : Error { using Error::Error; };

inline void check(fattn_status_t status) {
    if (status == FATTN_SUCCESS) return;
    const std::string message = fattn_last_error();
    switch (status) {
        case FATTN_ERROR_INVALID_ARGUMENT: throw InvalidArgument(status, message);
        case FATTN_ERROR_UNSUPPORTED: throw Unsupported(status, message);
        case FATTN_ERROR_OUT_OF_MEMORY: throw OutOfMemory(status, message);
        case FATTN_ERROR_NO_DEVICE: throw NoDevice(status, message);
        case FATTN_ERROR_BACKEND: throw BackendError(status, message);
        case FATTN_ERROR_INTERNAL: throw InternalError(status, message);
        default: throw Error(status, message);
    }
}

// A [batch, heads, seqlen, head_dim] view of memory you own.
inline fattn_tensor_t tensor_bhnd(void* data, fattn_dtype_t dtype, int64_t batch, int64_t heads,
                                  int64_t seqlen, int64_t head_dim) {
    return {data, dtype, 0, {batch, heads, seqlen, head_dim},
            {heads * seqlen * head_dim, seqlen * head_dim, head_dim, 1}};
}

// The same logical tensor over [batch, seqlen, heads, head_dim] memory (FlashAttention's layout).
inline fattn_tensor_t tensor_bnhd(void* data, fattn_dtype_t dtype, int64_t batch, int64_t heads,
                                  int64_t seqlen, int64_t head_dim) {
    return {data, dtype, 0, {batch, heads, seqlen, head_dim},
            {seqlen * heads * head_dim, head_dim, heads * head_dim, 1}};
}

// The attention descriptor with chainable setters: Attention().causal().scale(0.125f).
class Attention {
public:
    Attention& causal(bool on = true) { desc_.causal = on ? 1 : 0; return *this; }
    Attention& scale(float softmax_scale) { desc_.softmax_scale = softmax_scale; return *this; }
    Attention& window(int32_t left, int32_t right) {
        desc_.window_left = left;
        desc_.window_right = right;
        return *this;
    }
    Attention& deterministic(bool on = true) { desc_.deterministic = on ? 1 : 0; return *this; }
    const fattn_attention_desc_t* get() const noexcept { return &desc_; }

private:
    fattn_attention_desc_t desc_ = FATTN_ATTENTION_DESC_INIT;
};

// Owns one fattn handle (and so its scratch memory). Movable, not copyable; use one per thread.
class Handle {
public:
    explicit Handle(fattn_backend_t backend = FATTN_BACKEND_AUTO) { check(fattn_create(&handle_, backend)); }
    ~Handle() { fattn_destroy(handle_); }
    Handle(Handle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Handle& operator=(Handle&& other) noexcept {
        std::swap(handle_, other.handle_);
        return *this;
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;

    fattn_backend_t backend() const {
        fattn_backend_t backend;
        check(fattn_get_backend(handle_, &backend));
        return backend;
    }
    void set_stream(void* cuda_stream) { check(fattn_set_stream(handle_, cuda_stream)); }

    // o (and lse when given) are written.
    void forward(const Attention& attention, const fattn_tensor_t& q, const fattn_tensor_t& k,
                 const fattn_tensor_t& v, const fattn_tensor_t& o, const fattn_tensor_t* lse = nullptr) {
        check(fattn_forward(handle_, attention.get(), &q, &k, &v, &o, lse));
    }
    // dq, dk, dv are written; lse is the forward's.
    void backward(const Attention& attention, const fattn_tensor_t& q, const fattn_tensor_t& k,
                  const fattn_tensor_t& v, const fattn_tensor_t& o, const fattn_tensor_t& dout,
                  const fattn_tensor_t& lse, const fattn_tensor_t& dq, const fattn_tensor_t& dk,
                  const fattn_tensor_t& dv) {
        check(fattn_backward(handle_, attention.get(), &q, &k, &v, &o, &dout, &lse, &dq, &dk, &dv));
    }
    fattn_handle_t get() const noexcept { return handle_; }

private:
    fattn_handle_t handle_ = nullptr;
};

}  // namespace fattn
