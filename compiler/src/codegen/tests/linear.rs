//! Linear kernels against `y = W x + b`.

use super::*;
use crate::codegen::{pack_linear_weights, LinearSpec};
use crate::ir::{FusedLinear, Linear};

fn check(inn: usize, out: usize, bias: bool, relu: bool) {
    let op = FusedLinear { linear: Linear { in_features: inn, out_features: out, bias }, relu };
    let spec = LinearSpec { op, in_stride: inn + 3, out_stride: out + 2 };
    let mut rng = Rng::new((inn * 31 + out) as u64);
    let w = rng.vec(inn * out);
    let b = rng.vec(out);
    for isa in host_isas() {
        let k = compile_for(KernelSpec::Linear(spec.clone()), isa);
        check_kernel(&k, &spec, &w, &b, bias, relu, &mut rng);
    }
}

/// Batches below, at and above one block of samples (8 on avx512, 3 on avx2).
fn check_kernel(
    k: &CompiledKernels,
    spec: &LinearSpec,
    w: &[f32],
    b: &[f32],
    bias: bool,
    relu: bool,
    rng: &mut Rng,
) {
    let (inn, out) = (spec.op.linear.in_features, spec.op.linear.out_features);
    let name = k.kernels[0].implementation;
    for n in [1, 3, 10] {
        let x = rng.vec(n * spec.in_stride);
        let weights: Vec<&[f32]> = if bias { vec![w, b] } else { vec![w] };
        let packed = pack_linear_weights(spec, &weights).unwrap();
        let got = run(k, n, &[&x], &[&packed], n * spec.out_stride);
        for s in 0..n {
            let (mut want, mut mag) = (vec![0f64; out], vec![0f64; out]);
            for o in 0..out {
                let mut acc = if bias { b[o] as f64 } else { 0.0 };
                let mut m = acc.abs();
                for i in 0..inn {
                    let t = w[o * inn + i] as f64 * x[s * spec.in_stride + i] as f64;
                    acc += t;
                    m += t.abs();
                }
                want[o] = if relu { acc.max(0.0) } else { acc };
                mag[o] = m;
            }
            let at = s * spec.out_stride;
            assert_close(&format!("{name} {inn}->{out} n={n} sample {s}"), &got[at..at + out], &want, &mag);
            assert!(got[at + out..at + spec.out_stride].iter().all(|v| v.is_nan()), "wrote past the value");
        }
    }
}

#[test]
fn linear_shapes() {
    check(1, 1, true, false);
    check(3, 5, true, true);
    check(13, 32, false, false);
    check(64, 33, true, true);
    check(7, 100, true, false);
    check(300, 70, false, true);
}

#[test]
fn linear_rejects_wrong_weights() {
    let op = FusedLinear { linear: Linear { in_features: 3, out_features: 2, bias: true }, relu: false };
    let spec = LinearSpec { op, in_stride: 3, out_stride: 2 };
    assert!(pack_linear_weights(&spec, &[&[0.0; 6]]).is_err());
    assert!(pack_linear_weights(&spec, &[&[0.0; 5], &[0.0; 2]]).is_err());
}

mod random {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random sizes, from a single input feature to more than one K step of every unroll, and
        /// output counts around the 32-wide panels, on every ISA (batches of 1, 3 and 10).
        #[test]
        fn random_linears_match_the_definition(
            inn in prop_oneof![1usize..8, 8usize..700],
            out in prop_oneof![1usize..40, 60usize..140],
            bias in prop::bool::ANY,
            relu in prop::bool::ANY,
        ) {
            check(inn, out, bias, relu);
        }
    }
}
