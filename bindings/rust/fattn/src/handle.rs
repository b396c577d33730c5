//! The handle (RAII over fattn_create/fattn_destroy), the backend choice and the attention
//! descriptor. A handle owns scratch memory reused across calls and may be used by one thread at
//! a time: it is `Send` but not `Sync`, and computing takes `&mut self`.
use std::cell::Cell;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr;

use fattn_sys as sys;

use crate::dtype::Element;
use crate::error::{check, Result};
use crate::tensor::{TensorView, TensorViewMut};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CUDA when built in and a GPU of compute capability >= 8.0 is present, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

impl Backend {
    fn code(self) -> sys::fattn_backend_t {
        match self {
            Backend::Auto => sys::FATTN_BACKEND_AUTO,
            Backend::Cpu => sys::FATTN_BACKEND_CPU,
            Backend::Cuda => sys::FATTN_BACKEND_CUDA,
        }
    }

    /// Whether this backend can run on this machine now.
    pub fn available(self) -> bool {
        // SAFETY: a plain query with a valid enum value.
        unsafe { sys::fattn_backend_available(self.code()) == 1 }
    }
}

/// What to compute: masking, scale, determinism. Defaults: no mask, scale 1/sqrt(head_dim).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionDesc {
    raw: sys::fattn_attention_desc_t,
}

impl AttentionDesc {
    pub fn new() -> AttentionDesc {
        AttentionDesc::default()
    }

    /// Bottom-right aligned causal mask (query i sees keys up to i + Nk - Nq).
    pub fn causal(mut self, on: bool) -> Self {
        self.raw.causal = on as i32;
        self
    }

    /// Softmax scale; 0.0 (the default) selects 1/sqrt(head_dim).
    pub fn scale(mut self, softmax_scale: f32) -> Self {
        self.raw.softmax_scale = softmax_scale;
        self
    }

    /// Sliding window: keys at most `left` before and `right` after the diagonal; -1 = unbounded.
    pub fn window(mut self, left: i32, right: i32) -> Self {
        self.raw.window_left = left;
        self.raw.window_right = right;
        self
    }

    /// Bit-identical backward results from run to run.
    pub fn deterministic(mut self, on: bool) -> Self {
        self.raw.deterministic = on as i32;
        self
    }
}

/// One fattn handle.
///
/// Not `Sync`: a handle must not be shared between threads (each thread makes its own):
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<fattn::Handle>();
/// ```
pub struct Handle {
    raw: sys::fattn_handle_t,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: the ABI allows a handle to move between threads; it is only never used by two at once,
// which `!Sync` plus `&mut self` on every call guarantees.
unsafe impl Send for Handle {}

impl Handle {
    pub fn new(backend: Backend) -> Result<Handle> {
        let mut raw = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer.
        check(unsafe { sys::fattn_create(&mut raw, backend.code()) })?;
        Ok(Handle { raw, _not_sync: PhantomData })
    }

    /// The backend this handle runs on (Auto resolved).
    pub fn backend(&self) -> Result<Backend> {
        let mut code = sys::FATTN_BACKEND_AUTO;
        // SAFETY: a live handle and a valid out-pointer.
        check(unsafe { sys::fattn_get_backend(self.raw, &mut code) })?;
        Ok(if code == sys::FATTN_BACKEND_CUDA { Backend::Cuda } else { Backend::Cpu })
    }

    /// Sets the CUDA stream later calls run on (null: the default stream).
    ///
    /// # Safety
    /// `stream` must be null or a live `cudaStream_t` of the current device, and stay alive while
    /// this handle uses it.
    pub unsafe fn set_stream(&mut self, stream: *mut c_void) -> Result<()> {
        check(sys::fattn_set_stream(self.raw, stream))
    }

    /// out = softmax(scale * q k^T + mask) v; lse ([B, Hq, Nq, 1], f32) is written when given.
    /// Views over slices are host memory: use a CPU handle (a CUDA one refuses host memory).
    pub fn forward<T: Element>(
        &mut self,
        desc: &AttentionDesc,
        q: &TensorView<T>,
        k: &TensorView<T>,
        v: &TensorView<T>,
        out: &mut TensorViewMut<T>,
        lse: Option<&mut TensorViewMut<f32>>,
    ) -> Result<()> {
        let lse = lse.map_or(ptr::null(), |lse| lse.raw() as *const sys::fattn_tensor_t);
        // SAFETY: every view was checked against its slice, which outlives this call; outputs are
        // borrowed mutably, so they alias no input.
        check(unsafe { sys::fattn_forward(self.raw, &desc.raw, q.raw(), k.raw(), v.raw(), out.raw(), lse) })
    }

    /// dq, dk, dv of the forward that produced `out` and `lse`, given dout.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Element>(
        &mut self,
        desc: &AttentionDesc,
        q: &TensorView<T>,
        k: &TensorView<T>,
        v: &TensorView<T>,
        out: &TensorView<T>,
        dout: &TensorView<T>,
        lse: &TensorView<f32>,
        dq: &mut TensorViewMut<T>,
        dk: &mut TensorViewMut<T>,
        dv: &mut TensorViewMut<T>,
    ) -> Result<()> {
        // SAFETY: as in forward.
        check(unsafe {
            sys::fattn_backward(self.raw, &desc.raw, q.raw(), k.raw(), v.raw(), out.raw(), dout.raw(), lse.raw(),
                                dq.raw(), dk.raw(), dv.raw())
        })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is live and dropped once; destroy cannot fail for a valid handle.
        unsafe { sys::fattn_destroy(self.raw) };
    }
}
