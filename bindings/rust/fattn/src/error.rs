//! Errors: a library status plus the message of `fattn_last_error()` (which names the offending
//! argument and value), or a status and message raised in Rust by a tensor view's checks.
use std::ffi::CStr;
use std::fmt;

use fattn_sys as sys;

/// What went wrong, one variant per `fattn_status_t` failure value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    InvalidArgument,
    Unsupported,
    OutOfMemory,
    NoDevice,
    Backend,
    Internal,
    /// A status this crate does not know (from a newer library).
    Other(i32),
}

impl Status {
    fn from_code(code: sys::fattn_status_t) -> Status {
        match code {
            sys::FATTN_ERROR_INVALID_ARGUMENT => Status::InvalidArgument,
            sys::FATTN_ERROR_UNSUPPORTED => Status::Unsupported,
            sys::FATTN_ERROR_OUT_OF_MEMORY => Status::OutOfMemory,
            sys::FATTN_ERROR_NO_DEVICE => Status::NoDevice,
            sys::FATTN_ERROR_BACKEND => Status::Backend,
            sys::FATTN_ERROR_INTERNAL => Status::Internal,
            other => Status::Other(other),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid_argument(message: String) -> Error {
        Error { status: Status::InvalidArgument, message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

/// Ok for FATTN_SUCCESS, else the error with this thread's fattn_last_error() text.
pub(crate) fn check(code: sys::fattn_status_t) -> Result<()> {
    if code == sys::FATTN_SUCCESS {
        return Ok(());
    }
    // SAFETY: fattn_last_error returns a valid NUL-terminated string owned by this thread.
    let message = unsafe { CStr::from_ptr(sys::fattn_last_error()) }.to_string_lossy().into_owned();
    Err(Error { status: Status::from_code(code), message })
}
