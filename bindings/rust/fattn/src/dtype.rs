//! Storage element types: `f32`, and the 16-bit [`F16`] (IEEE half) and [`Bf16`] (bfloat16)
//! newtypes over their bits, with round-to-nearest-even conversions from `f32`. The library
//! always accumulates in f32; these only say how tensors are stored.
use fattn_sys as sys;

/// The dtype codes of the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    Bf16,
}

impl DType {
    pub(crate) fn code(self) -> sys::fattn_dtype_t {
        match self {
            DType::F32 => sys::FATTN_DTYPE_F32,
            DType::F16 => sys::FATTN_DTYPE_F16,
            DType::Bf16 => sys::FATTN_DTYPE_BF16,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::F16 {}
    impl Sealed for super::Bf16 {}
}

/// A type libfattn can store tensors in. Sealed: the library knows exactly these three.
pub trait Element: Copy + sealed::Sealed {
    const DTYPE: DType;
    /// The nearest value of this type (ties to even).
    fn from_f32(value: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn from_f32(value: f32) -> f32 {
        value
    }
    fn to_f32(self) -> f32 {
        self
    }
}

/// IEEE 754 binary16, stored as its bits.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct F16(pub u16);

impl Element for F16 {
    const DTYPE: DType = DType::F16;

    /// The nearest half (ties to even); overflow gives infinity, NaN stays NaN.
    fn from_f32(value: f32) -> F16 {
        let bits = value.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        let exponent = ((bits >> 23) & 0xff) as i32;
        let mantissa = bits & 0x7f_ffff;
        if exponent == 0xff {
            let nan_payload = if mantissa != 0 { 0x200 | (mantissa >> 13) as u16 } else { 0 };
            return F16(sign | 0x7c00 | nan_payload);
        }
        let half_exponent = exponent - 127 + 15;
        if half_exponent >= 0x1f {
            return F16(sign | 0x7c00);
        }
        // Normal halves drop 13 mantissa bits; subnormal ones the implicit bit's shift more.
        let (full, dropped_bits, exponent_field) = if half_exponent > 0 {
            (mantissa, 13, (half_exponent as u32) << 10)
        } else if half_exponent >= -10 {
            (mantissa | 0x80_0000, (14 - half_exponent) as u32, 0)
        } else {
            return F16(sign); // below half the smallest subnormal
        };
        let kept = exponent_field | (full >> dropped_bits);
        let remainder = full & ((1u32 << dropped_bits) - 1);
        let halfway = 1u32 << (dropped_bits - 1);
        let round_up = remainder > halfway || (remainder == halfway && kept & 1 == 1);
        // A carry out of the mantissa correctly bumps the exponent (up to infinity).
        F16(sign | (kept + round_up as u32) as u16)
    }

    fn to_f32(self) -> f32 {
        let sign = ((self.0 & 0x8000) as u32) << 16;
        let exponent = ((self.0 >> 10) & 0x1f) as u32;
        let mantissa = (self.0 & 0x3ff) as u32;
        match exponent {
            0 => {
                let magnitude = mantissa as f32 * (-24f32).exp2(); // subnormal or zero: exact
                f32::from_bits(sign | magnitude.to_bits())
            }
            0x1f => f32::from_bits(sign | 0x7f80_0000 | (mantissa << 13)),
            _ => f32::from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13)),
        }
    }
}

/// bfloat16 (the top half of an f32), stored as its bits.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bf16(pub u16);

impl Element for Bf16 {
    const DTYPE: DType = DType::Bf16;

    /// The nearest bfloat16 (ties to even); NaN stays NaN.
    fn from_f32(value: f32) -> Bf16 {
        let bits = value.to_bits();
        if value.is_nan() {
            return Bf16(((bits >> 16) | 0x40) as u16);
        }
        let rounding = 0x7fff + ((bits >> 16) & 1);
        Bf16((bits.wrapping_add(rounding) >> 16) as u16)
    }

    fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

macro_rules! f32_conversions {
    ($t:ty) => {
        impl From<f32> for $t {
            fn from(value: f32) -> $t {
                <$t as Element>::from_f32(value)
            }
        }
        impl From<$t> for f32 {
            fn from(value: $t) -> f32 {
                Element::to_f32(value)
            }
        }
    };
}
f32_conversions!(F16);
f32_conversions!(Bf16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_round_to_nearest_even() {
        assert_eq!(F16::from_f32(1.0).0, 0x3c00);
        assert_eq!(F16::from_f32(-2.5).0, 0xc100);
        assert_eq!(F16::from_f32(65504.0).0, 0x7bff); // largest finite
        assert_eq!(F16::from_f32(65520.0).0, 0x7c00); // rounds up to infinity
        assert_eq!(F16::from_f32(1.0 + 2f32.powi(-11)).0, 0x3c00); // tie, to even (down)
        assert_eq!(F16::from_f32(1.0 + 3.0 * 2f32.powi(-11)).0, 0x3c02); // tie, to even (up)
        assert_eq!(F16::from_f32(2f32.powi(-24)).0, 0x0001); // smallest subnormal
        assert_eq!(F16::from_f32(2f32.powi(-25)).0, 0x0000); // tie with zero, to even
        assert_eq!(F16::from_f32(1.5 * 2f32.powi(-25)).0, 0x0001);
        assert_eq!(F16::from_f32(2f32.powi(-14) - 2f32.powi(-25)).0, 0x0400); // carry into normal
        assert!(F16::from_f32(f32::NAN).to_f32().is_nan());
        assert_eq!(F16::from_f32(f32::NEG_INFINITY).to_f32(), f32::NEG_INFINITY);
    }

    #[test]
    fn every_half_round_trips_through_f32() {
        for bits in 0..=u16::MAX {
            let half = F16(bits);
            if half.to_f32().is_nan() {
                continue;
            }
            assert_eq!(F16::from_f32(half.to_f32()), half, "bits {bits:#06x}");
        }
    }

    #[test]
    fn bfloat16_conversions_round_to_nearest_even() {
        assert_eq!(Bf16::from_f32(1.0).0, 0x3f80);
        assert_eq!(Bf16::from_f32(1.0 + 2f32.powi(-8)).0, 0x3f80); // tie, to even (down)
        assert_eq!(Bf16::from_f32(1.0 + 3.0 * 2f32.powi(-8)).0, 0x3f82); // tie, to even (up)
        assert_eq!(Bf16::from_f32(f32::MAX).0, 0x7f80); // rounds up to infinity
        assert!(Bf16::from_f32(f32::NAN).to_f32().is_nan());
        for bits in (0..=u16::MAX).filter(|b| b & 0x7f80 != 0x7f80) {
            assert_eq!(Bf16::from_f32(Bf16(bits).to_f32()).0, bits);
        }
    }
}
