//! The float64 reference of the Rust tests and example, written from the ABI text like
//! tests/reference.h, generic over the arithmetic type so the same code, run in f32 with
//! storage-rounded outputs, is the accuracy rule's naive yardstick (its backward reads the stored
//! out, as any backward given the forward's output does); it also gives each element's term
//! magnitudes for the rule's slack. Contiguous [B, H, N, D] data.
//!   s = scale q k^T over visible keys, lse = log sum exp s, P = exp(s - lse), out = P v;
//!   dP = dout v^T, D = rowsum(dout * out), dS = P (dP - D), dq = scale dS k, dk = scale dS^T q,
//!   dv = P^T dout; dk, dv summed over the query heads sharing a key/value head.
#![allow(dead_code)] // each test crate including this module uses a different part of it

use std::ops::{Add, Div, Mul, Sub};

pub trait Real: Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> {
    fn of(value: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
}

impl Real for f64 {
    fn of(value: f64) -> f64 { value }
    fn to_f64(self) -> f64 { self }
    fn exp(self) -> f64 { f64::exp(self) }
    fn ln(self) -> f64 { f64::ln(self) }
}

impl Real for f32 {
    fn of(value: f64) -> f32 { value as f32 }
    fn to_f64(self) -> f64 { self as f64 }
    fn exp(self) -> f32 { f32::exp(self) }
    fn ln(self) -> f32 { f32::ln(self) }
}

#[derive(Clone, Copy, Debug)]
pub struct Problem {
    pub batch: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub seqlen_q: usize,
    pub seqlen_k: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub window: (i64, i64),
}

impl Problem {
    pub fn q_shape(&self) -> [usize; 4] { [self.batch, self.heads_q, self.seqlen_q, self.head_dim] }
    pub fn kv_shape(&self) -> [usize; 4] { [self.batch, self.heads_kv, self.seqlen_k, self.head_dim] }
    pub fn lse_shape(&self) -> [usize; 4] { [self.batch, self.heads_q, self.seqlen_q, 1] }

    /// Row i sees key j (bottom-right aligned diagonal; causal = window right 0).
    pub fn visible(&self, i: usize, j: usize) -> bool {
        let diagonal = i as i64 + self.seqlen_k as i64 - self.seqlen_q as i64;
        let right = if self.causal { 0 } else { self.window.1 };
        let (left, j) = (self.window.0, j as i64);
        (left < 0 || j >= diagonal - left) && (right < 0 || j <= diagonal + right)
    }
}

/// out, lse, dq, dk, dv as f64 (lse -inf for rows that see no key).
pub struct Results {
    pub out: Vec<f64>,
    pub lse: Vec<f64>,
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
}

impl Results {
    fn zeros(q_len: usize, kv_len: usize, head_dim: usize) -> Results {
        Results { out: vec![0.0; q_len], lse: vec![0.0; q_len / head_dim], dq: vec![0.0; q_len],
                  dk: vec![0.0; kv_len], dv: vec![0.0; kv_len] }
    }
}

/// (results, term magnitudes). `stored` rounds a value as the storage type would (the identity
/// for the reference); out is stored before the backward reads it, dq/dk/dv are returned
/// unrounded for the caller to store. The term magnitudes are each element's sum of |terms|: the
/// scale of its rounding error, also where terms cancel (a row with one key has dS = 0 exactly in
/// exact math, not in an exp2 kernel).
pub fn attention<R: Real>(p: &Problem, q: &[f64], k: &[f64], v: &[f64], dout: &[f64],
                          stored: impl Fn(R) -> R) -> (Results, Results) {
    let d = p.head_dim;
    let (q, k, v, dout): (Vec<R>, Vec<R>, Vec<R>, Vec<R>) =
        (convert(q), convert(k), convert(v), convert(dout));
    let scale = R::of(1.0 / (d as f64).sqrt());
    let zero = R::of(0.0);
    let mut out = vec![zero; q.len()];
    let mut lse = vec![f64::NEG_INFINITY; q.len() / d];
    let (mut dq, mut dk, mut dv) = (vec![zero; q.len()], vec![zero; k.len()], vec![zero; v.len()]);
    let mut terms = Results::zeros(q.len(), k.len(), d);
    let dot = |x: &[R], y: &[R]| x.iter().zip(y).fold(zero, |sum, (&a, &b)| sum + a * b);
    let abs_dot = |x: &[R], y: &[R]| x.iter().zip(y).map(|(a, b)| (a.to_f64() * b.to_f64()).abs()).sum::<f64>();
    let mut p_row = vec![zero; p.seqlen_k];
    for b in 0..p.batch {
        for h in 0..p.heads_q {
            let kv_head = h / (p.heads_q / p.heads_kv);
            let key = |j: usize| ((b * p.heads_kv + kv_head) * p.seqlen_k + j) * d;
            for i in 0..p.seqlen_q {
                let row = ((b * p.heads_q + h) * p.seqlen_q + i) * d;
                let keys: Vec<usize> = (0..p.seqlen_k).filter(|&j| p.visible(i, j)).collect();
                if keys.is_empty() {
                    continue; // out, dq stay zero; lse stays -inf
                }
                for &j in &keys {
                    p_row[j] = scale * dot(&q[row..row + d], &k[key(j)..key(j) + d]);
                    terms.lse[row / d] = terms.lse[row / d].max(p_row[j].to_f64().abs() + 1.0);
                }
                let max = keys.iter().fold(p_row[keys[0]], |m, &j| if p_row[j] > m { p_row[j] } else { m });
                let sum = keys.iter().fold(zero, |s, &j| s + (p_row[j] - max).exp());
                let row_lse = max + sum.ln();
                lse[row / d] = row_lse.to_f64();
                for &j in &keys {
                    p_row[j] = (p_row[j] - row_lse).exp();
                    for e in 0..d {
                        out[row + e] = out[row + e] + p_row[j] * v[key(j) + e];
                        terms.out[row + e] += (p_row[j] * v[key(j) + e]).to_f64().abs();
                    }
                }
                for value in &mut out[row..row + d] {
                    *value = stored(*value);
                }
                let delta = dot(&dout[row..row + d], &out[row..row + d]);
                let delta_terms = abs_dot(&dout[row..row + d], &out[row..row + d]);
                for &j in &keys {
                    let ds = p_row[j] * (dot(&dout[row..row + d], &v[key(j)..key(j) + d]) - delta);
                    let prob = p_row[j].to_f64();
                    let ds_terms = prob * (abs_dot(&dout[row..row + d], &v[key(j)..key(j) + d]) + delta_terms);
                    for e in 0..d {
                        dq[row + e] = dq[row + e] + scale * ds * k[key(j) + e];
                        dk[key(j) + e] = dk[key(j) + e] + scale * ds * q[row + e];
                        dv[key(j) + e] = dv[key(j) + e] + p_row[j] * dout[row + e];
                        terms.dq[row + e] += (scale * k[key(j) + e]).to_f64().abs() * ds_terms;
                        terms.dk[key(j) + e] += (scale * q[row + e]).to_f64().abs() * ds_terms;
                        terms.dv[key(j) + e] += prob * dout[row + e].to_f64().abs();
                    }
                }
            }
        }
    }
    let back = |x: Vec<R>| x.into_iter().map(R::to_f64).collect();
    (Results { out: back(out), lse, dq: back(dq), dk: back(dk), dv: back(dv) }, terms)
}

fn convert<R: Real>(x: &[f64]) -> Vec<R> {
    x.iter().map(|&value| R::of(value)).collect()
}

/// Largest |got - expected|; equal infinities count as no error, a NaN as infinite error.
pub fn max_error(got: &[f64], expected: &[f64]) -> f64 {
    got.iter().zip(expected).fold(0.0, |worst, (&g, &e)| {
        let error = if g == e { 0.0 } else { (g - e).abs() };
        if error.is_nan() { f64::INFINITY } else { worst.max(error) }
    })
}

/// Uniform values in [-1, 1) from a xorshift generator: fresh per seed, no external crates.
pub fn random_values(seed: &mut u64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}
