/* What a C caller may legally do and a C++ one may not: pass any int as an enum argument (C enums
 * are plain ints). The fuzzer goes through these to hand the library out-of-range enum values. */
#include "fattn.h"

fattn_status_t fuzz_create_raw(fattn_handle_t* handle, int32_t backend) {
    return fattn_create(handle, (fattn_backend_t)backend);
}

int fuzz_backend_available_raw(int32_t backend) { return fattn_backend_available((fattn_backend_t)backend); }

const char* fuzz_status_string_raw(int32_t status) { return fattn_status_string((fattn_status_t)status); }
