//! Raw declarations of libfattn's C ABI (include/fattn.h, version 0.x), one to one: the same
//! names, values and `#[repr(C)]` layouts. Everything here is `unsafe` to call; the `fattn`
//! crate is the safe API on top. Layout tests pin the struct sizes and field offsets.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

pub const FATTN_VERSION_MAJOR: u32 = 0;
pub const FATTN_VERSION_MINOR: u32 = 1;
pub const FATTN_VERSION_PATCH: u32 = 0;
pub const FATTN_VERSION_NUMBER: u32 = FATTN_VERSION_MAJOR * 10000 + FATTN_VERSION_MINOR * 100 + FATTN_VERSION_PATCH;

/// `fattn_status_t` (a C enum: an `int`).
pub type fattn_status_t = c_int;
pub const FATTN_SUCCESS: fattn_status_t = 0;
pub const FATTN_ERROR_INVALID_ARGUMENT: fattn_status_t = 10;
pub const FATTN_ERROR_UNSUPPORTED: fattn_status_t = 20;
pub const FATTN_ERROR_OUT_OF_MEMORY: fattn_status_t = 30;
pub const FATTN_ERROR_NO_DEVICE: fattn_status_t = 35;
pub const FATTN_ERROR_BACKEND: fattn_status_t = 40;
pub const FATTN_ERROR_INTERNAL: fattn_status_t = 90;

pub type fattn_backend_t = c_int;
pub const FATTN_BACKEND_AUTO: fattn_backend_t = 0;
pub const FATTN_BACKEND_CPU: fattn_backend_t = 1;
pub const FATTN_BACKEND_CUDA: fattn_backend_t = 2;

pub type fattn_dtype_t = c_int;
pub const FATTN_DTYPE_F32: fattn_dtype_t = 0;
pub const FATTN_DTYPE_F16: fattn_dtype_t = 1;
pub const FATTN_DTYPE_BF16: fattn_dtype_t = 2;

/// The opaque handle type behind `fattn_handle_t`.
#[repr(C)]
pub struct fattn_handle_s {
    _opaque: [u8; 0],
}
pub type fattn_handle_t = *mut fattn_handle_s;

/// A logical [batch, heads, seqlen, head_dim] tensor; strides in elements, `strides[3] == 1`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct fattn_tensor_t {
    pub data: *mut c_void,
    pub dtype: i32,
    pub reserved: i32,
    pub shape: [i64; 4],
    pub strides: [i64; 4],
}

/// The attention descriptor; `Default` gives `FATTN_ATTENTION_DESC_INIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct fattn_attention_desc_t {
    pub struct_size: u32,
    pub causal: i32,
    pub softmax_scale: f32,
    pub window_left: i32,
    pub window_right: i32,
    pub deterministic: i32,
}

impl Default for fattn_attention_desc_t {
    fn default() -> Self {
        fattn_attention_desc_t {
            struct_size: std::mem::size_of::<fattn_attention_desc_t>() as u32,
            causal: 0,
            softmax_scale: 0.0,
            window_left: -1,
            window_right: -1,
            deterministic: 0,
        }
    }
}

extern "C" {
    pub fn fattn_version_number() -> u32;
    pub fn fattn_version_string() -> *const c_char;
    pub fn fattn_status_string(status: fattn_status_t) -> *const c_char;
    pub fn fattn_last_error() -> *const c_char;

    pub fn fattn_backend_available(backend: fattn_backend_t) -> c_int;
    pub fn fattn_create(handle: *mut fattn_handle_t, backend: fattn_backend_t) -> fattn_status_t;
    pub fn fattn_destroy(handle: fattn_handle_t) -> fattn_status_t;
    pub fn fattn_get_backend(handle: fattn_handle_t, backend: *mut fattn_backend_t) -> fattn_status_t;
    pub fn fattn_set_stream(handle: fattn_handle_t, cuda_stream: *mut c_void) -> fattn_status_t;

    pub fn fattn_forward(
        handle: fattn_handle_t,
        desc: *const fattn_attention_desc_t,
        q: *const fattn_tensor_t,
        k: *const fattn_tensor_t,
        v: *const fattn_tensor_t,
        o: *const fattn_tensor_t,
        lse: *const fattn_tensor_t,
    ) -> fattn_status_t;

    pub fn fattn_backward(
        handle: fattn_handle_t,
        desc: *const fattn_attention_desc_t,
        q: *const fattn_tensor_t,
        k: *const fattn_tensor_t,
        v: *const fattn_tensor_t,
        o: *const fattn_tensor_t,
        dout: *const fattn_tensor_t,
        lse: *const fattn_tensor_t,
        dq: *const fattn_tensor_t,
        dk: *const fattn_tensor_t,
        dv: *const fattn_tensor_t,
    ) -> fattn_status_t;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn tensor_layout_matches_the_c_struct() {
        assert_eq!(size_of::<fattn_tensor_t>(), 80);
        assert_eq!(align_of::<fattn_tensor_t>(), 8);
        assert_eq!(offset_of!(fattn_tensor_t, data), 0);
        assert_eq!(offset_of!(fattn_tensor_t, dtype), 8);
        assert_eq!(offset_of!(fattn_tensor_t, reserved), 12);
        assert_eq!(offset_of!(fattn_tensor_t, shape), 16);
        assert_eq!(offset_of!(fattn_tensor_t, strides), 48);
    }

    #[test]
    fn descriptor_layout_matches_the_c_struct() {
        assert_eq!(size_of::<fattn_attention_desc_t>(), 24);
        assert_eq!(offset_of!(fattn_attention_desc_t, struct_size), 0);
        assert_eq!(offset_of!(fattn_attention_desc_t, causal), 4);
        assert_eq!(offset_of!(fattn_attention_desc_t, softmax_scale), 8);
        assert_eq!(offset_of!(fattn_attention_desc_t, window_left), 12);
        assert_eq!(offset_of!(fattn_attention_desc_t, window_right), 16);
        assert_eq!(offset_of!(fattn_attention_desc_t, deterministic), 20);
        assert_eq!(fattn_attention_desc_t::default().struct_size, 24);
    }

    #[test]
    fn linked_library_has_this_major_version() {
        let number = unsafe { fattn_version_number() };
        assert_eq!(number / 10000, FATTN_VERSION_MAJOR);
        let text = unsafe { CStr::from_ptr(fattn_version_string()) }.to_str().unwrap();
        assert_eq!(text, format!("{}.{}.{}", number / 10000, number / 100 % 100, number % 100));
    }

    #[test]
    fn every_status_has_text() {
        for status in [FATTN_SUCCESS, FATTN_ERROR_INVALID_ARGUMENT, FATTN_ERROR_INTERNAL, 12345] {
            let text = unsafe { CStr::from_ptr(fattn_status_string(status)) };
            assert!(!text.to_bytes().is_empty(), "status {status}");
        }
    }
}
