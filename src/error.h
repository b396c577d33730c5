// Internal error type: every failure inside the library is an Error carrying the public status and
// a message naming the argument. api.cpp is the only place that catches it and turns it into a
// status plus the thread-local text behind fattn_last_error().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "fattn.h"

namespace fattn {

class Error : public std::runtime_error {
public:
    Error(fattn_status_t status, const std::string& message)
        : std::runtime_error(message), status_(status) {}
    fattn_status_t status() const noexcept { return status_; }

private:
    fattn_status_t status_;
};

// Concatenates any streamable values: cat("q.shape[3]=", d, " differs ...").
template <typename... Parts>
std::string cat(Parts&&... parts) {
    std::ostringstream out;
    (out << ... << std::forward<Parts>(parts));
    return out.str();
}

template <typename... Parts>
[[noreturn]] void fail(fattn_status_t status, Parts&&... parts) {
    throw Error(status, cat(std::forward<Parts>(parts)...));
}

}  // namespace fattn
