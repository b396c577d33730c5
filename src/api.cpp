// The C ABI boundary. Every entry point: validate once (validate.cpp), ask the backend whether it
// can serve the request, then run it. No exception crosses this file: each is caught here and
// becomes a status plus this thread's fattn_last_error() text.
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "backend.h"
#include "error.h"
#include "fattn.h"
#include "validate.h"

struct fattn_handle_s {
    std::unique_ptr<fattn::Backend> backend;
};

namespace {

thread_local std::string last_error_message;

fattn_status_t record(fattn_status_t status, const char* function, const char* message) {
    try {
        last_error_message = std::string(function) + ": " + message;
    } catch (...) {
        last_error_message.clear();  // out of memory for the message itself: leave it empty
    }
    return status;
}

// Runs `body`, translating every exception into a status and a recorded message.
template <typename Body>
fattn_status_t guarded(const char* function, Body&& body) noexcept {
    try {
        body();
        return FATTN_SUCCESS;
    } catch (const fattn::Error& error) {
        return record(error.status(), function, error.what());
    } catch (const std::bad_alloc&) {
        return record(FATTN_ERROR_OUT_OF_MEMORY, function, "host memory allocation failed");
    } catch (const std::exception& error) {
        return record(FATTN_ERROR_INTERNAL, function, error.what());
    } catch (...) {
        return record(FATTN_ERROR_INTERNAL, function, "unknown exception");
    }
}

fattn::Backend& backend_of(fattn_handle_t handle) {
    if (handle == nullptr) fattn::fail(FATTN_ERROR_INVALID_ARGUMENT, "handle is NULL");
    return *handle->backend;
}

bool is_backend(int value) {
    return value == FATTN_BACKEND_AUTO || value == FATTN_BACKEND_CPU || value == FATTN_BACKEND_CUDA;
}

}  // namespace

extern "C" {

FATTN_API uint32_t fattn_version_number(void) { return FATTN_VERSION_NUMBER; }

FATTN_API const char* fattn_version_string(void) {
#define FATTN_STRINGIFY_(x) #x
#define FATTN_STRINGIFY(x) FATTN_STRINGIFY_(x)
    return FATTN_STRINGIFY(FATTN_VERSION_MAJOR) "." FATTN_STRINGIFY(FATTN_VERSION_MINOR) "." FATTN_STRINGIFY(
        FATTN_VERSION_PATCH);
#undef FATTN_STRINGIFY
#undef FATTN_STRINGIFY_
}

FATTN_API const char* fattn_status_string(fattn_status_t status) {
    switch (status) {
        case FATTN_SUCCESS: return "success";
        case FATTN_ERROR_INVALID_ARGUMENT: return "invalid argument";
        case FATTN_ERROR_UNSUPPORTED: return "unsupported by this backend or build";
        case FATTN_ERROR_OUT_OF_MEMORY: return "out of memory";
        case FATTN_ERROR_NO_DEVICE: return "no usable CUDA device";
        case FATTN_ERROR_BACKEND: return "CUDA runtime or driver error";
        case FATTN_ERROR_INTERNAL: return "internal error in fattn";
    }
    return "unknown status code";
}

FATTN_API const char* fattn_last_error(void) { return last_error_message.c_str(); }

FATTN_API int fattn_backend_available(fattn_backend_t backend) {
    switch (backend) {
        case FATTN_BACKEND_AUTO:
        case FATTN_BACKEND_CPU: return 1;
        case FATTN_BACKEND_CUDA: return fattn::cuda_backend_available() ? 1 : 0;
    }
    return 0;
}

FATTN_API fattn_status_t fattn_create(fattn_handle_t* handle, fattn_backend_t backend) {
    return guarded("fattn_create", [&] {
        if (handle == nullptr) fattn::fail(FATTN_ERROR_INVALID_ARGUMENT, "handle is NULL");
        *handle = nullptr;
        if (!is_backend(static_cast<int>(backend)))
            fattn::fail(FATTN_ERROR_INVALID_ARGUMENT, "backend=", static_cast<int>(backend),
                        " is not a fattn_backend_t value");
        auto created = std::make_unique<fattn_handle_s>();
        const bool use_cuda = backend == FATTN_BACKEND_CUDA ||
                              (backend == FATTN_BACKEND_AUTO && fattn::cuda_backend_available());
        created->backend = use_cuda ? fattn::make_cuda_backend() : fattn::make_cpu_backend();
        *handle = created.release();
    });
}

FATTN_API fattn_status_t fattn_destroy(fattn_handle_t handle) {
    return guarded("fattn_destroy", [&] { delete handle; });
}

FATTN_API fattn_status_t fattn_get_backend(fattn_handle_t handle, fattn_backend_t* backend) {
    return guarded("fattn_get_backend", [&] {
        const fattn::Backend& chosen = backend_of(handle);
        if (backend == nullptr) fattn::fail(FATTN_ERROR_INVALID_ARGUMENT, "backend is NULL");
        *backend = chosen.kind();
    });
}

FATTN_API fattn_status_t fattn_set_stream(fattn_handle_t handle, void* cuda_stream) {
    return guarded("fattn_set_stream", [&] { backend_of(handle).set_stream(cuda_stream); });
}

FATTN_API fattn_status_t fattn_forward(fattn_handle_t handle, const fattn_attention_desc_t* desc,
                                       const fattn_tensor_t* q, const fattn_tensor_t* k,
                                       const fattn_tensor_t* v, const fattn_tensor_t* o,
                                       const fattn_tensor_t* lse) {
    return guarded("fattn_forward", [&] {
        fattn::Backend& backend = backend_of(handle);
        const fattn::AttnParams params = fattn::build_forward_params(desc, q, k, v, o, lse);
        backend.check_forward(params);
        backend.forward(params);
    });
}

FATTN_API fattn_status_t fattn_backward(fattn_handle_t handle, const fattn_attention_desc_t* desc,
                                        const fattn_tensor_t* q, const fattn_tensor_t* k,
                                        const fattn_tensor_t* v, const fattn_tensor_t* o,
                                        const fattn_tensor_t* dout, const fattn_tensor_t* lse,
                                        const fattn_tensor_t* dq, const fattn_tensor_t* dk,
                                        const fattn_tensor_t* dv) {
    return guarded("fattn_backward", [&] {
        fattn::Backend& backend = backend_of(handle);
        const fattn::AttnBwdParams params =
            fattn::build_backward_params(desc, q, k, v, o, dout, lse, dq, dk, dv);
        backend.check_backward(params);
        backend.backward(params);
    });
}

}  // extern "C"
