// Argument validation of the C ABI: turns the caller's descriptor and fattn_tensor_t's into a
// validated AttnParams / AttnBwdParams, or throws Error(FATTN_ERROR_INVALID_ARGUMENT) with a
// message naming the argument and the offending value. Nothing here touches tensor data.
#pragma once

#include "fattn.h"
#include "params.h"

namespace fattn {

AttnParams build_forward_params(const fattn_attention_desc_t* desc, const fattn_tensor_t* q,
                                const fattn_tensor_t* k, const fattn_tensor_t* v,
                                const fattn_tensor_t* o, const fattn_tensor_t* lse);

AttnBwdParams build_backward_params(const fattn_attention_desc_t* desc, const fattn_tensor_t* q,
                                    const fattn_tensor_t* k, const fattn_tensor_t* v,
                                    const fattn_tensor_t* o, const fattn_tensor_t* dout,
                                    const fattn_tensor_t* lse, const fattn_tensor_t* dq,
                                    const fattn_tensor_t* dk, const fattn_tensor_t* dv);

}  // namespace fattn
