//! Elementwise kernels: add, ReLU, affine, concatenation copies.

use super::*;
use crate::codegen::eltwise::CHUNK;
use crate::codegen::{EltwiseOp, EltwiseSpec};

fn spec(op: EltwiseOp, len: usize, inputs: usize) -> EltwiseSpec {
    EltwiseSpec { op, len, in_strides: (0..inputs).map(|i| len + 1 + i).collect(), out_stride: len + 3 }
}

fn run_spec(spec: &EltwiseSpec, n: usize, inputs: &[Vec<f32>], weights: &[&[f32]]) -> Vec<f32> {
    let k = compile_one(KernelSpec::Eltwise(spec.clone()));
    let ins: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    run(&k, n, &ins, weights, n * spec.out_stride)
}

fn check_each(spec: &EltwiseSpec, n: usize, got: &[f32], f: impl Fn(usize, usize) -> f64) {
    for s in 0..n {
        let at = s * spec.out_stride;
        let want: Vec<f64> = (0..spec.len).map(|i| f(s, i)).collect();
        let mag: Vec<f64> = want.iter().map(|w| w.abs()).collect();
        assert_close(&format!("{:?} n={n} sample {s}", spec.op), &got[at..at + spec.len], &want, &mag);
        assert!(got[at + spec.len..at + spec.out_stride].iter().all(|v| v.is_nan()), "wrote past the value");
    }
}

#[test]
fn add_and_relu() {
    let mut rng = Rng::new(5);
    for len in [1, 3, 5, 8, 13, 100, CHUNK + 7, 2 * CHUNK] {
        for n in [1, 3] {
            let sp = spec(EltwiseOp::Add, len, 2);
            let a = rng.vec(n * sp.in_strides[0]);
            let b = rng.vec(n * sp.in_strides[1]);
            let got = run_spec(&sp, n, &[a.clone(), b.clone()], &[]);
            check_each(&sp, n, &got, |s, i| {
                a[s * sp.in_strides[0] + i] as f64 + b[s * sp.in_strides[1] + i] as f64
            });
            let sp = spec(EltwiseOp::Relu, len, 1);
            let a = rng.vec(n * sp.in_strides[0]);
            let got = run_spec(&sp, n, std::slice::from_ref(&a), &[]);
            check_each(&sp, n, &got, |s, i| (a[s * sp.in_strides[0] + i] as f64).max(0.0));
        }
    }
}

#[test]
fn affine() {
    let mut rng = Rng::new(9);
    for (channels, plane) in [(1, 1), (3, 5), (13, 9), (20, 1), (5, 49)] {
        for relu in [false, true] {
            let sp = spec(EltwiseOp::Affine { channels, plane, relu }, channels * plane, 1);
            let (scale, shift) = (rng.vec(channels), rng.vec(channels));
            for n in [1, 3] {
                let x = rng.vec(n * sp.in_strides[0]);
                let got = run_spec(&sp, n, std::slice::from_ref(&x), &[&scale, &shift]);
                check_each(&sp, n, &got, |s, i| {
                    let c = i / plane;
                    let v = x[s * sp.in_strides[0] + i] as f64 * scale[c] as f64 + shift[c] as f64;
                    if relu {
                        v.max(0.0)
                    } else {
                        v
                    }
                });
            }
        }
    }
}

#[test]
fn in_place_relu() {
    // Output and input are the same buffer (the memory plan reuses dying inputs).
    let sp = EltwiseSpec { op: EltwiseOp::Relu, len: 37, in_strides: vec![40], out_stride: 40 };
    let k = compile_one(KernelSpec::Eltwise(sp));
    let mut rng = Rng::new(3);
    let mut buf = rng.vec(80);
    let want: Vec<f32> = buf.iter().map(|v| v.max(0.0)).collect();
    let ins = [buf.as_ptr()];
    let args = KernelArgs {
        inputs: &ins,
        output: buf.as_mut_ptr(),
        weights: &[],
        scratch: std::ptr::null_mut(),
        batch: 2,
    };
    // SAFETY: one buffer of 2 samples x 40 floats, read and written element by element.
    unsafe { k.kernels[0].call(&args, 0, k.kernels[0].work_items(2)) };
    for s in 0..2 {
        assert_eq!(&buf[s * 40..s * 40 + 37], &want[s * 40..s * 40 + 37]);
    }
}

#[test]
fn concat_copies() {
    let mut rng = Rng::new(11);
    let lens = vec![3, 16, 5];
    let len: usize = lens.iter().sum();
    let sp = EltwiseSpec {
        op: EltwiseOp::Concat { lens: lens.clone() },
        len,
        in_strides: vec![4, 16, 9],
        out_stride: len + 2,
    };
    for n in [1, 3] {
        let ins: Vec<Vec<f32>> = sp.in_strides.iter().map(|s| rng.vec(n * s)).collect();
        let got = run_spec(&sp, n, &ins, &[]);
        check_each(&sp, n, &got, |s, i| {
            let (k, off) = if i < 3 {
                (0, i)
            } else if i < 19 {
                (1, i - 3)
            } else {
                (2, i - 19)
            };
            ins[k][s * sp.in_strides[k] + off] as f64
        });
    }
}

#[test]
fn kernels_with_equal_specs_are_compiled_once_and_share_their_code() {
    let relu = KernelSpec::Eltwise(spec(EltwiseOp::Relu, 37, 1));
    let add = KernelSpec::Eltwise(spec(EltwiseOp::Add, 37, 2));
    let request = |name: &str, spec: &KernelSpec| KernelRequest { name: name.into(), spec: spec.clone() };
    let requests = [request("a", &relu), request("b", &add), request("c", &relu), request("d", &add)];
    let options = |keep_clif| CompileOptions { keep_clif, threads: Some(2), ..Default::default() };
    let k = compile(&requests, options(false)).unwrap();
    let names: Vec<&str> = k.kernels.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(k.kernels[0].entry() as usize, k.kernels[2].entry() as usize);
    assert_eq!(k.kernels[1].entry() as usize, k.kernels[3].entry() as usize);
    assert_ne!(k.kernels[0].entry() as usize, k.kernels[1].entry() as usize);
    // Dumps name every node: with CLIF kept, nothing is shared.
    let k = compile(&requests, options(true)).unwrap();
    assert_ne!(k.kernels[0].entry() as usize, k.kernels[2].entry() as usize);
}
