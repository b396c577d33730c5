//! The safe crate against the library (CPU backend): results of every element type, layout, mask
//! and GQA against the float64 reference under the accuracy rule, LSE of rows that see nothing,
//! errors with their status and message, handles on several threads, determinism.
mod reference;

use std::time::{SystemTime, UNIX_EPOCH};

use fattn::{AttentionDesc, Backend, Bf16, DType, Element, Handle, Status, TensorView, TensorViewMut, F16};
use reference::Problem;

fn fresh_seed() -> u64 {
    let seed = std::env::var("FATTN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("seed {seed} (set FATTN_TEST_SEED to replay)");
    seed
}

fn problem(batch: usize, heads_q: usize, heads_kv: usize, seqlen_q: usize, seqlen_k: usize, head_dim: usize) -> Problem {
    Problem { batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, causal: false, window: (-1, -1) }
}

fn desc_of(p: &Problem) -> AttentionDesc {
    AttentionDesc::new().causal(p.causal).window(p.window.0 as i32, p.window.1 as i32)
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Bhnd,
    Bnhd,
}

/// Random values stored in T, in the memory order of `layout`, and their exact f64 values in
/// [B, H, N, D] order for the reference.
fn random_tensor<T: Element>(seed: &mut u64, shape: [usize; 4], layout: Layout) -> (Vec<T>, Vec<f64>) {
    let [b, h, n, d] = shape;
    let memory: Vec<T> = reference::random_values(seed, b * h * n * d).into_iter().map(|x| T::from_f32(x as f32)).collect();
    let mut logical = vec![0.0; memory.len()];
    for (index, value) in logical.iter_mut().enumerate() {
        let (bi, hi, ni, di) = (index / (h * n * d), index / (n * d) % h, index / d % n, index % d);
        let offset = if layout == Layout::Bnhd { ((bi * n + ni) * h + hi) * d + di } else { index };
        *value = memory[offset].to_f32() as f64;
    }
    (memory, logical)
}

fn view<'a, T: Element>(data: &'a [T], shape: [usize; 4], layout: Layout) -> TensorView<'a, T> {
    match layout {
        Layout::Bhnd => TensorView::contiguous(data, shape),
        Layout::Bnhd => TensorView::bnhd(data, shape),
    }
    .unwrap()
}

fn view_mut<'a, T: Element>(data: &'a mut [T], shape: [usize; 4], layout: Layout) -> TensorViewMut<'a, T> {
    match layout {
        Layout::Bhnd => TensorViewMut::contiguous(data, shape),
        Layout::Bnhd => TensorViewMut::bnhd(data, shape),
    }
    .unwrap()
}

/// The logical [B, H, N, D] f64 values of a tensor stored in `layout`.
fn logical<T: Element>(data: &[T], shape: [usize; 4], layout: Layout) -> Vec<f64> {
    let strides = view(data, shape, layout).strides();
    let [b, h, n, d] = shape;
    (0..b * h * n * d)
        .map(|index| {
            let coords = [index / (h * n * d), index / (n * d) % h, index / d % n, index % d];
            let offset: usize = coords.iter().zip(strides).map(|(c, s)| c * s).sum();
            data[offset].to_f32() as f64
        })
        .collect()
}

/// Forward + backward through the crate; results as logical f64 in the order of `reference::Results`.
fn run_and_check<T: Element>(p: Problem, layout: Layout, seed: &mut u64) -> reference::Results {
    let (q_shape, kv_shape) = (p.q_shape(), p.kv_shape());
    let (q, q64) = random_tensor::<T>(seed, q_shape, layout);
    let (k, k64) = random_tensor::<T>(seed, kv_shape, layout);
    let (v, v64) = random_tensor::<T>(seed, kv_shape, layout);
    let (dout, dout64) = random_tensor::<T>(seed, q_shape, layout);
    let zero = T::from_f32(0.0);
    let (mut out, mut lse) = (vec![zero; q.len()], vec![0f32; q.len() / p.head_dim]);
    let (mut dq, mut dk, mut dv) = (vec![zero; q.len()], vec![zero; k.len()], vec![zero; v.len()]);

    let mut handle = Handle::new(Backend::Cpu).unwrap();
    let desc = desc_of(&p);
    let (qv, kv, vv) = (view(&q, q_shape, layout), view(&k, kv_shape, layout), view(&v, kv_shape, layout));
    handle.forward(&desc, &qv, &kv, &vv, &mut view_mut(&mut out, q_shape, layout),
                   Some(&mut TensorViewMut::contiguous(&mut lse, p.lse_shape()).unwrap())).unwrap();
    handle.backward(&desc, &qv, &kv, &vv, &view(&out, q_shape, layout), &view(&dout, q_shape, layout),
                    &TensorView::contiguous(&lse, p.lse_shape()).unwrap(), &mut view_mut(&mut dq, q_shape, layout),
                    &mut view_mut(&mut dk, kv_shape, layout), &mut view_mut(&mut dv, kv_shape, layout)).unwrap();

    let got = reference::Results {
        out: logical(&out, q_shape, layout),
        lse: lse.iter().map(|&x| x as f64).collect(),
        dq: logical(&dq, q_shape, layout),
        dk: logical(&dk, kv_shape, layout),
        dv: logical(&dv, kv_shape, layout),
    };
    let (expected, terms) = reference::attention::<f64>(&p, &q64, &k64, &v64, &dout64, |x| x);
    let (naive, _) = reference::attention::<f32>(&p, &q64, &k64, &v64, &dout64, |x| T::from_f32(x).to_f32());
    let stored = |x: &[f64]| x.iter().map(|&value| T::from_f32(value as f32).to_f32() as f64).collect::<Vec<_>>();
    let outputs = [
        ("out", &got.out, &expected.out, stored(&naive.out), &terms.out),
        ("lse", &got.lse, &expected.lse, naive.lse.clone(), &terms.lse),
        ("dq", &got.dq, &expected.dq, stored(&naive.dq), &terms.dq),
        ("dk", &got.dk, &expected.dk, stored(&naive.dk), &terms.dk),
        ("dv", &got.dv, &expected.dv, stored(&naive.dv), &terms.dv),
    ];
    // One storage ulp at 1.0: the floor the core suite's rule adds at an output's largest magnitude.
    let storage_ulp = match T::DTYPE {
        DType::F16 => 2f64.powi(-10),
        DType::Bf16 => 2f64.powi(-7),
        DType::F32 => f32::EPSILON as f64,
    };
    for (name, got, expected, naive, terms) in outputs {
        // The accuracy rule (tests/harness.h): within 2x the naive error, plus one storage ulp at the
        // largest magnitude and a few f32 ulps of each element's terms.
        let naive_error = reference::max_error(&naive, expected);
        let magnitude = expected.iter().filter(|x| x.is_finite()).fold(0.0f64, |m, &x| m.max(x.abs()));
        for (index, ((&g, &e), &t)) in got.iter().zip(expected.iter()).zip(terms.iter()).enumerate() {
            let error = reference::max_error(&[g], &[e]);
            let bound = 2.0 * naive_error + storage_ulp * magnitude + 4.0 * f32::EPSILON as f64 * t;
            assert!(error <= bound, "{name}[{index}] ({}): error {error:.3e} > bound {bound:.3e} for {p:?}",
                    std::any::type_name::<T>());
        }
    }
    got
}

/// Every shape x mask x layout case, for one element type.
fn check_all_cases<T: Element>() {
    let mut seed = fresh_seed();
    for (shape, layout) in [(problem(2, 4, 4, 17, 17, 32), Layout::Bhnd), (problem(1, 4, 2, 33, 65, 64), Layout::Bnhd),
                            (problem(1, 3, 1, 7, 129, 16), Layout::Bhnd), (problem(1, 2, 2, 40, 40, 128), Layout::Bnhd)] {
        for p in [shape, Problem { causal: true, ..shape }, Problem { window: (5, 3), ..shape }] {
            run_and_check::<T>(p, layout, &mut seed);
        }
    }
}

#[test]
fn f32_matches_reference() {
    check_all_cases::<f32>();
}

#[test]
fn f16_matches_reference() {
    check_all_cases::<F16>();
}

#[test]
fn bf16_matches_reference() {
    check_all_cases::<Bf16>();
}

#[test]
fn rows_that_see_no_key_give_zeros_and_minus_infinity() {
    let p = Problem { causal: true, ..problem(1, 2, 2, 12, 5, 16) }; // first 7 rows see nothing
    let got = run_and_check::<f32>(p, Layout::Bhnd, &mut fresh_seed());
    for h in 0..2 {
        for i in 0..12 {
            let row = h * 12 + i;
            assert_eq!(got.lse[row] == f64::NEG_INFINITY, i < 7, "row {i}");
            if i < 7 {
                assert!(got.out[row * 16..row * 16 + 16].iter().chain(&got.dq[row * 16..row * 16 + 16]).all(|&x| x == 0.0));
            }
        }
    }
}

#[test]
fn library_errors_carry_status_and_message() {
    let data = vec![0.5f32; 2 * 8 * 16];
    let q = TensorView::contiguous(&data, [1, 2, 8, 16]).unwrap();
    let short_k = TensorView::contiguous(&data, [1, 2, 8, 8]).unwrap();
    let three_heads = TensorView::contiguous(&data[..3 * 8 * 8], [1, 3, 8, 8]).unwrap();
    let mut out_data = vec![7f32; data.len()];
    let mut handle = Handle::new(Backend::Cpu).unwrap();
    let desc = AttentionDesc::new();

    let error = handle
        .forward(&desc, &q, &short_k, &q, &mut TensorViewMut::contiguous(&mut out_data, [1, 2, 8, 16]).unwrap(), None)
        .unwrap_err();
    assert_eq!(error.status, Status::InvalidArgument);
    assert!(error.message.contains("k.shape[3]=8"), "{error}");
    let error = handle
        .forward(&desc, &three_heads, &short_k, &short_k,
                 &mut TensorViewMut::contiguous(&mut out_data, [1, 3, 8, 8]).unwrap(), None)
        .unwrap_err();
    assert_eq!(error.status, Status::InvalidArgument);
    assert!(out_data.iter().all(|&x| x == 7.0), "a failed call wrote its output");
    let error = handle
        .forward(&AttentionDesc::new().scale(-1.0), &q, &q, &q,
                 &mut TensorViewMut::contiguous(&mut out_data, [1, 2, 8, 16]).unwrap(), None)
        .unwrap_err();
    assert!(error.message.contains("softmax_scale"), "{error}");
}

#[test]
fn backends() {
    let handle = Handle::new(Backend::Cpu).unwrap();
    assert_eq!(handle.backend().unwrap(), Backend::Cpu);
    assert!(Backend::Cpu.available() && Backend::Auto.available());
    let auto = Handle::new(Backend::Auto).unwrap().backend().unwrap();
    assert_eq!(auto, if Backend::Cuda.available() { Backend::Cuda } else { Backend::Cpu });
    if !Backend::Cuda.available() {
        let error = Handle::new(Backend::Cuda).err().unwrap();
        assert_eq!(error.status, Status::NoDevice);
        assert!(!error.message.is_empty());
    }
}

#[test]
fn handles_on_several_threads_and_deterministic_results() {
    let p = Problem { causal: true, ..problem(1, 4, 2, 33, 65, 64) };
    let mut seed = fresh_seed();
    let inputs: Vec<Vec<f32>> = [p.q_shape(), p.kv_shape(), p.kv_shape()]
        .iter()
        .map(|shape| reference::random_values(&mut seed, shape.iter().product()).iter().map(|&x| x as f32).collect())
        .collect();
    let forward = |handle: &mut Handle| {
        let mut out = vec![0f32; inputs[0].len()];
        handle.forward(&desc_of(&p), &TensorView::contiguous(&inputs[0], p.q_shape()).unwrap(),
                       &TensorView::contiguous(&inputs[1], p.kv_shape()).unwrap(),
                       &TensorView::contiguous(&inputs[2], p.kv_shape()).unwrap(),
                       &mut TensorViewMut::contiguous(&mut out, p.q_shape()).unwrap(), None).unwrap();
        out
    };
    let expected = forward(&mut Handle::new(Backend::Cpu).unwrap());
    let mut moved = Handle::new(Backend::Cpu).unwrap(); // Send: a handle may move to another thread
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| {
                let mut handle = Handle::new(Backend::Cpu).unwrap();
                (0..10).all(|_| forward(&mut handle) == expected)
            }))
            .chain(std::iter::once(scope.spawn(|| forward(&mut moved) == expected)))
            .collect();
        assert!(workers.into_iter().all(|worker| worker.join().unwrap()));
    });
}
