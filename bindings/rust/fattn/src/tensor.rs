//! Tensor views: a slice plus a logical [batch, heads, seqlen, head_dim] shape and element strides,
//! checked here before anything reaches the library: every extent >= 1, a contiguous head_dim
//! (strides[3] == 1), every addressed element inside the slice, and, for the outputs, no two
//! logical elements sharing memory (the library's threads would race on them).
use std::ffi::c_void;
use std::marker::PhantomData;

use fattn_sys as sys;

use crate::dtype::Element;
use crate::error::{Error, Result};

/// Strides of contiguous [d0, d1, d2, d3] memory.
fn row_major_strides(dims: [usize; 4]) -> [usize; 4] {
    [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1]
}

/// Strides of [B, N, H, D] memory seen as the logical [B, H, N, D] of `shape`.
fn bnhd_strides(shape: [usize; 4]) -> [usize; 4] {
    let [b, h, n, d] = shape;
    let memory = row_major_strides([b, n, h, d]);
    [memory[0], memory[2], memory[1], memory[3]]
}

fn describe(len: usize, data: *mut c_void, dtype: sys::fattn_dtype_t, shape: [usize; 4],
            strides: [usize; 4], output: bool) -> Result<sys::fattn_tensor_t> {
    let invalid = |message: String| Err(Error::invalid_argument(format!("tensor view: {message}")));
    if let Some(axis) = shape.iter().position(|&extent| extent == 0) {
        return invalid(format!("shape[{axis}]=0 must be >= 1 (shape {shape:?})"));
    }
    if strides[3] != 1 {
        return invalid(format!("strides[3]={} must be 1: a row's head_dim elements are contiguous", strides[3]));
    }
    // The last element addressed; overflow means it is certainly outside any slice.
    let last = shape.iter().zip(strides).try_fold(0usize, |sum, (&extent, stride)| {
        (extent - 1).checked_mul(stride).and_then(|step| sum.checked_add(step))
    });
    match last {
        Some(last) if last < len && last <= i64::MAX as usize => {}
        _ => return invalid(format!(
            "shape {shape:?} with strides {strides:?} reaches past the slice of {len} elements")),
    }
    if output && overlaps(shape, strides) {
        return invalid(format!("output shape {shape:?} with strides {strides:?} maps several elements to one place"));
    }
    Ok(sys::fattn_tensor_t {
        data,
        dtype,
        reserved: 0,
        shape: shape.map(|extent| extent as i64),
        strides: strides.map(|stride| stride as i64),
    })
}

/// True when two index tuples can land on one element. Sorted by stride, each axis must step
/// past the whole span of the smaller ones (axes of extent 1 never step and are ignored).
fn overlaps(shape: [usize; 4], strides: [usize; 4]) -> bool {
    let mut axes: Vec<(usize, usize)> =
        strides.into_iter().zip(shape).filter(|&(_, extent)| extent > 1).collect();
    axes.sort_unstable();
    let mut span = 1usize; // elements covered by the axes seen so far
    for (stride, extent) in axes {
        if stride < span {
            return true;
        }
        span += stride * (extent - 1);
    }
    false
}

macro_rules! constructors {
    ($slice:ty, $pointer:ident, $output:expr) => {
        /// A view of contiguous [batch, heads, seqlen, head_dim] memory.
        pub fn contiguous(data: $slice, shape: [usize; 4]) -> Result<Self> {
            Self::strided(data, shape, row_major_strides(shape))
        }

        /// A [batch, heads, seqlen, head_dim] view of contiguous [batch, seqlen, heads, head_dim]
        /// memory (FlashAttention's layout), without a copy.
        pub fn bnhd(data: $slice, shape: [usize; 4]) -> Result<Self> {
            Self::strided(data, shape, bnhd_strides(shape))
        }

        /// A view with explicit element strides of the logical [batch, heads, seqlen, head_dim].
        pub fn strided(data: $slice, shape: [usize; 4], strides: [usize; 4]) -> Result<Self> {
            let raw = describe(data.len(), data.$pointer() as *mut c_void, T::DTYPE.code(), shape, strides, $output)?;
            Ok(Self { raw, _data: PhantomData })
        }

        pub fn shape(&self) -> [usize; 4] {
            self.raw.shape.map(|extent| extent as usize)
        }

        pub fn strides(&self) -> [usize; 4] {
            self.raw.strides.map(|stride| stride as usize)
        }

        pub(crate) fn raw(&self) -> &sys::fattn_tensor_t {
            &self.raw
        }
    };
}

/// A read-only tensor view (an input: q, k, v, o and dout in the backward, lse in the backward).
pub struct TensorView<'a, T: Element> {
    raw: sys::fattn_tensor_t,
    _data: PhantomData<&'a [T]>,
}

impl<'a, T: Element> TensorView<'a, T> {
    constructors!(&'a [T], as_ptr, false);
}

/// A writable tensor view (an output); it borrows its slice mutably, so it can alias nothing else.
pub struct TensorViewMut<'a, T: Element> {
    raw: sys::fattn_tensor_t,
    _data: PhantomData<&'a mut [T]>,
}

impl<'a, T: Element> TensorViewMut<'a, T> {
    constructors!(&'a mut [T], as_mut_ptr, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn contiguous_and_bnhd_strides() {
        let data = vec![0f32; 2 * 3 * 5 * 4];
        assert_eq!(TensorView::contiguous(&data, [2, 3, 5, 4]).unwrap().strides(), [60, 20, 4, 1]);
        assert_eq!(TensorView::bnhd(&data, [2, 3, 5, 4]).unwrap().strides(), [60, 4, 12, 1]);
    }

    #[test]
    fn views_must_stay_inside_their_slice() {
        let data = vec![0f32; 119];
        let error = TensorView::contiguous(&data, [2, 3, 5, 4]).err().unwrap();
        assert_eq!(error.status, Status::InvalidArgument);
        assert!(error.message.contains("past the slice of 119 elements"), "{}", error.message);
        let padded = TensorView::strided(&data, [1, 2, 3, 4], [0, 50, 10, 1]).unwrap();
        assert_eq!(padded.shape(), [1, 2, 3, 4]);
        let huge = TensorView::strided(&data, [2, 1, 1, 1], [usize::MAX, 1, 1, 1]);
        assert!(huge.err().unwrap().message.contains("past the slice"));
    }

    #[test]
    fn bad_shapes_and_strides_are_refused() {
        let data = vec![0f32; 64];
        let zero = TensorView::contiguous(&data, [1, 0, 4, 4]).err().unwrap();
        assert!(zero.message.contains("shape[1]=0"), "{}", zero.message);
        let strided_dim = TensorView::strided(&data, [1, 1, 4, 4], [16, 16, 8, 2]).err().unwrap();
        assert!(strided_dim.message.contains("strides[3]=2"), "{}", strided_dim.message);
    }

    #[test]
    fn outputs_may_not_overlap_themselves_but_inputs_may() {
        let mut data = vec![0f32; 64];
        // Broadcast over heads (stride 0) is fine to read ...
        assert!(TensorView::strided(&data, [1, 4, 4, 4], [0, 0, 4, 1]).is_ok());
        // ... but not to write, nor rows closer than head_dim.
        for strides in [[0, 0, 4, 1], [64, 16, 2, 1]] {
            let error = TensorViewMut::strided(&mut data, [1, 4, 4, 4], strides).err().unwrap();
            assert!(error.message.contains("maps several elements to one place"), "{}", error.message);
        }
        assert!(TensorViewMut::strided(&mut data, [1, 4, 4, 4], [0, 4, 16, 1]).is_ok());
    }
}
