// The CPU backend's kernels, as seen by its host side (backend.cpp): how much scratch a call
// needs, and the computation itself over scratch that backend.cpp reserved beforehand. Reserving
// first is what lets an allocation failure return FATTN_ERROR_OUT_OF_MEMORY with every output
// untouched: once these functions start, nothing can fail.
#pragma once

#include <cstddef>

#include "params.h"

namespace fattn::cpu {

// Both kernels run on `threads` OpenMP threads and give bit-identical results for any value of it.
std::size_t forward_scratch_bytes(const AttnParams& params, int threads);
void forward(const AttnParams& params, float* scratch, int threads);

std::size_t backward_scratch_bytes(const AttnBwdParams& params, int threads);
void backward(const AttnBwdParams& params, float* scratch, int threads);

}  // namespace fattn::cpu
