//! Safe Rust API of libfattn: fused exact attention (FlashAttention-2 class), forward and backward.
//!
//! ```no_run
//! use fattn::{AttentionDesc, Backend, Handle, TensorView, TensorViewMut};
//! # fn main() -> Result<(), fattn::Error> {
//! let (b, h, n, d) = (1, 2, 64, 32);
//! let q = vec![0.1f32; b * h * n * d];
//! let (k, v) = (q.clone(), q.clone());
//! let mut out = vec![0f32; q.len()];
//! let mut handle = Handle::new(Backend::Cpu)?;
//! handle.forward(
//!     &AttentionDesc::new().causal(true),
//!     &TensorView::contiguous(&q, [b, h, n, d])?,
//!     &TensorView::contiguous(&k, [b, h, n, d])?,
//!     &TensorView::contiguous(&v, [b, h, n, d])?,
//!     &mut TensorViewMut::contiguous(&mut out, [b, h, n, d])?,
//!     None,
//! )?;
//! # Ok(()) }
//! ```
//!
//! Tensors are views over slices with a logical `[batch, heads, seqlen, head_dim]` shape and
//! element strides, checked in Rust (every element inside the slice; outputs never overlap
//! themselves), so `[batch, seqlen, heads, head_dim]` data is described without a copy. The
//! element type (`f32`, [`F16`], [`Bf16`]) is checked at compile time; all other argument errors
//! come back as an [`Error`] with the library's status and message.
mod dtype;
mod error;
mod handle;
mod tensor;

pub use dtype::{Bf16, DType, Element, F16};
pub use error::{Error, Result, Status};
pub use handle::{AttentionDesc, Backend, Handle};
pub use tensor::{TensorView, TensorViewMut};

/// The linked library's version, e.g. "0.1.0".
pub fn library_version() -> &'static str {
    // SAFETY: the library returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(fattn_sys::fattn_version_string()) }.to_str().unwrap_or("?")
}
