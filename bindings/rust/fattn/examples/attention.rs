//! Causal grouped-query attention, forward and backward on the CPU in f32, checked against a
//! float64 computation of the same formulas. Run from bindings/rust:
//!     FATTN_LIB_DIR=<dir of libfattn.so> LD_LIBRARY_PATH=<same> cargo run -p fattn --example attention
use fattn::{AttentionDesc, Backend, Handle, TensorView, TensorViewMut};

#[path = "../tests/reference/mod.rs"]
mod reference;

fn main() -> Result<(), fattn::Error> {
    let problem = reference::Problem {
        batch: 2, heads_q: 4, heads_kv: 2, seqlen_q: 100, seqlen_k: 100, head_dim: 64,
        causal: true, window: (-1, -1),
    };
    let (q_shape, kv_shape) = (problem.q_shape(), problem.kv_shape());
    let (q_len, kv_len) = (q_shape.iter().product(), kv_shape.iter().product());
    let mut seed = 0x5eed_f00d_u64;
    let [q, k, v, dout] = [q_len, kv_len, kv_len, q_len].map(|len| reference::random_values(&mut seed, len));
    let to_f32 = |x: &[f64]| x.iter().map(|&value| value as f32).collect::<Vec<f32>>();
    let (q32, k32, v32, dout32) = (to_f32(&q), to_f32(&k), to_f32(&v), to_f32(&dout));
    let (mut out, mut lse) = (vec![0f32; q_len], vec![0f32; q_len / problem.head_dim]);
    let (mut dq, mut dk, mut dv) = (vec![0f32; q_len], vec![0f32; kv_len], vec![0f32; kv_len]);

    let mut handle = Handle::new(Backend::Cpu)?;
    let desc = AttentionDesc::new().causal(true);
    let (q_view, k_view, v_view) = (
        TensorView::contiguous(&q32, q_shape)?,
        TensorView::contiguous(&k32, kv_shape)?,
        TensorView::contiguous(&v32, kv_shape)?,
    );
    handle.forward(&desc, &q_view, &k_view, &v_view, &mut TensorViewMut::contiguous(&mut out, q_shape)?,
                   Some(&mut TensorViewMut::contiguous(&mut lse, problem.lse_shape())?))?;
    handle.backward(&desc, &q_view, &k_view, &v_view, &TensorView::contiguous(&out, q_shape)?,
                    &TensorView::contiguous(&dout32, q_shape)?, &TensorView::contiguous(&lse, problem.lse_shape())?,
                    &mut TensorViewMut::contiguous(&mut dq, q_shape)?,
                    &mut TensorViewMut::contiguous(&mut dk, kv_shape)?,
                    &mut TensorViewMut::contiguous(&mut dv, kv_shape)?)?;

    // The reference reads the same f32-stored inputs.
    let widen = |x: &[f32]| x.iter().map(|&value| value as f64).collect::<Vec<f64>>();
    let (expected, _) = reference::attention::<f64>(&problem, &widen(&q32), &widen(&k32), &widen(&v32), &widen(&dout32), |x| x);
    println!("fattn {} (Rust), causal GQA attention {:?} x kv {:?}, f32 on the CPU", fattn::library_version(),
             q_shape, kv_shape);
    let mut ok = true;
    for (name, got, want) in [("out", &out, &expected.out), ("lse", &lse, &expected.lse), ("dq", &dq, &expected.dq),
                              ("dk", &dk, &expected.dk), ("dv", &dv, &expected.dv)] {
        let error = reference::max_error(&widen(got), want);
        println!("  {name:<4} max |fattn - f64 reference| = {error:.2e}");
        ok &= error < 1e-5; // a few f32 ulps of values of order 1
    }
    println!("{}", if ok { "OK" } else { "FAILED" });
    std::process::exit(if ok { 0 } else { 1 });
}
