//! Agreement with PyTorch: every seed model, run by the reference interpreter, computes the logits
//! torchvision computed for the same weights and input (`tests/golden/pytorch`, made by
//! `make_golden.py`, which documents how to regenerate them).
//!
//! The weights and the input are regenerated here with netc-fill v1, bit for bit as the script made
//! them, so no weight file is needed. Tolerance: `max |diff| <= 1e-4 * max |logit|` and the same top-1
//! class per sample. The reference interpreter accumulates in f64, so the difference is PyTorch's f32
//! rounding, which grows with depth; relative to the largest logit it stays around 1e-6 (the deep
//! ResNets' logits reach 1e9 because random BatchNorm statistics let activations grow, which a
//! relative bound absorbs).
//!
//! Each model also runs after the whole optimisation pipeline, through the reference interpreter and
//! through the JIT backend, against the same golden logits and against each other.

use crate::common::{compile, compile_text, filled_weights, golden_pytorch, model};
use netc_runtime::io::npy;
use netc_runtime::weights::Dtype;
use netc_runtime::{fill, reference, Tensor, WeightFile};

/// Compares logits with the golden ones; returns `max |diff| / max |logit|`.
fn compare(name: &str, got: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(got.shape, expected.shape, "{name}: logits shape");
    let max_logit = expected.data.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
    let max_diff = got
        .data
        .iter()
        .zip(&expected.data)
        .fold(0f64, |m, (&a, &b)| m.max((f64::from(a) - f64::from(b)).abs()));
    let relative = max_diff / max_logit;
    println!("{name:28} max|logit| {max_logit:12.6e}  max|diff| {max_diff:10.3e}  relative {relative:9.3e}");
    assert!(relative <= 1e-4, "{name}: max |diff| {max_diff} exceeds 1e-4 x max |logit| {max_logit}");
    for n in 0..expected.batch() {
        assert_eq!(argmax(got.sample(n)), argmax(expected.sample(n)), "{name}: top-1 of sample {n}");
    }
    relative
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// Runs `models/<model>.net` on netc-fill v1 weights and a batch of `batch` netc-fill inputs, as
/// written and after the whole optimisation pipeline (same weights: folded and merged slots are
/// evaluated from them), and compares both with `tests/golden/pytorch/<golden>.logits.npy`.
fn agrees_with_pytorch(model_name: &str, golden: &str, batch: usize) {
    let graph = compile(&model(model_name));
    let file = filled_weights(&graph);
    let weights = file.bind(&graph).unwrap_or_else(|e| panic!("{e}"));
    let mut shape = vec![batch];
    shape.extend_from_slice(graph.shape(graph.inputs[0]).dims());
    let input = Tensor::new(shape.clone(), fill::input(&shape)).unwrap();
    let expected = npy::read(&golden_pytorch(&format!("{golden}.logits.npy"))).unwrap();

    let outputs =
        reference::run(&graph, &weights, std::slice::from_ref(&input)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outputs.len(), 1, "{model_name}: inference outputs");
    compare(golden, &outputs[0], &expected);

    let mut optimized = graph.clone();
    let options = netc_compiler::passes::Options { verify_each: true, ..Default::default() };
    netc_compiler::passes::optimize(&mut optimized, &options).unwrap_or_else(|e| panic!("{e}"));
    let fused =
        reference::run(&optimized, &weights, std::slice::from_ref(&input)).unwrap_or_else(|e| panic!("{e}"));
    compare(&format!("{golden} (optimised)"), &fused[0], &expected);
    compare(&format!("{golden} (optimised vs as written)"), &fused[0], &outputs[0]);

    // The JIT backend on the same optimised graph and weights, with the kernels of every ISA the
    // host has.
    for isa in crate::common::host_isas() {
        let choice = netc_compiler::codegen::IsaChoice::Fixed(isa);
        let jit = crate::common::jit_run_isa(&optimized, &weights, &input, 2, choice);
        compare(&format!("{golden} (JIT {isa})"), &jit, &expected);
        compare(&format!("{golden} (JIT {isa} vs reference)"), &jit, &fused[0]);
    }
}

#[test]
fn alexnet_matches_pytorch() {
    agrees_with_pytorch("alexnet", "alexnet", 1);
}

#[test]
fn alexnet_paper_matches_pytorch() {
    agrees_with_pytorch("alexnet_paper", "alexnet_paper", 1);
}

#[test]
fn vgg11_matches_pytorch() {
    agrees_with_pytorch("vgg11", "vgg11", 1);
}

#[test]
fn vgg13_matches_pytorch() {
    agrees_with_pytorch("vgg13", "vgg13", 1);
}

#[test]
fn vgg16_matches_pytorch() {
    agrees_with_pytorch("vgg16", "vgg16", 1);
}

#[test]
fn vgg19_matches_pytorch() {
    agrees_with_pytorch("vgg19", "vgg19", 1);
}

#[test]
fn googlenet_matches_pytorch() {
    agrees_with_pytorch("googlenet", "googlenet", 1);
}

#[test]
fn resnet18_matches_pytorch() {
    agrees_with_pytorch("resnet18", "resnet18", 1);
}

#[test]
fn resnet34_matches_pytorch() {
    agrees_with_pytorch("resnet34", "resnet34", 1);
}

#[test]
fn resnet50_matches_pytorch() {
    agrees_with_pytorch("resnet50", "resnet50", 1);
}

#[test]
fn resnet101_matches_pytorch() {
    agrees_with_pytorch("resnet101", "resnet101", 1);
}

#[test]
fn resnet152_matches_pytorch() {
    agrees_with_pytorch("resnet152", "resnet152", 1);
}

#[test]
fn preact_resnet50_matches_pytorch() {
    agrees_with_pytorch("preact_resnet50", "preact_resnet50", 1);
}

/// ReLU6, depthwise convolutions and inverted residuals (`models/mobilenet_v2.net`).
#[test]
fn mobilenet_v2_matches_pytorch() {
    agrees_with_pytorch("mobilenet_v2", "mobilenet_v2", 1);
}

/// Chunk, concatenation and channel shuffle (`models/shufflenet_v2_x1_0.net`).
#[test]
fn shufflenet_v2_matches_pytorch() {
    agrees_with_pytorch("shufflenet_v2_x1_0", "shufflenet_v2_x1_0", 1);
}

/// SiLU, sigmoid and squeeze-and-excitation's per-channel product (`models/efficientnet_b0.net`).
#[test]
fn efficientnet_b0_matches_pytorch() {
    agrees_with_pytorch("efficientnet_b0", "efficientnet_b0", 1);
}

/// Hardswish, hardsigmoid-scaled squeeze-and-excitation (`models/mobilenet_v3_small.net`).
#[test]
fn mobilenet_v3_small_matches_pytorch() {
    agrees_with_pytorch("mobilenet_v3_small", "mobilenet_v3_small", 1);
}

/// Grouped convolutions and torchvision keys with hyphens (`models/regnet_x_400mf.net`).
#[test]
fn regnet_x_400mf_matches_pytorch() {
    agrees_with_pytorch("regnet_x_400mf", "regnet_x_400mf", 1);
}

/// Chained concatenations, every one in place after optimisation (`models/densenet121.net`).
#[test]
fn densenet121_matches_pytorch() {
    agrees_with_pytorch("densenet121", "densenet121", 1);
}

/// A batch of two: sample 0 is resnet18's input, so row 0 must also match `resnet18.logits.npy`.
#[test]
fn resnet18_batch_of_two_matches_pytorch() {
    agrees_with_pytorch("resnet18", "resnet18_b2", 2);
}

/// A real torchvision `state_dict` file, loaded as-is: `googlenet(aux_logits=False)` saved by
/// `safetensors.torch.save_file` in float16 (converted on load), with int64 `num_batches_tracked`
/// entries (ignored) and no weights for the training-only auxiliary classifiers (optional).
#[test]
fn googlenet_runs_a_torchvision_f16_state_dict_file() {
    let graph = compile(&model("googlenet"));
    let file = WeightFile::open(golden_pytorch("googlenet_torchvision_f16.safetensors")).unwrap();
    let dtypes: Vec<Dtype> = file.tensors().values().map(|t| t.dtype).collect();
    assert_eq!(dtypes.iter().filter(|&&d| d == Dtype::F16).count(), 287);
    assert_eq!(dtypes.iter().filter(|&&d| d == Dtype::I64).count(), 57);
    assert!(!file.tensors().keys().any(|k| k.starts_with("aux")));
    let weights = file.bind(&graph).unwrap_or_else(|e| panic!("{e}"));
    assert!(weights.iter().all(|(_, t)| !t.is_borrowed()), "f16 tensors are converted, hence owned");
    let input = Tensor::new(vec![1, 3, 224, 224], fill::input(&[1, 3, 224, 224])).unwrap();
    let outputs = reference::run(&graph, &weights, &[input]).unwrap();
    let expected = npy::read(&golden_pytorch("googlenet_torchvision_f16.logits.npy")).unwrap();
    compare("googlenet_torchvision_f16", &outputs[0], &expected);
}

/// The ops and options the seed models do not exercise (dilated grouped strided conv, LRN with an odd
/// window, dilated ceil-mode max pooling, ceil-mode average pooling with and without counting the
/// padding, BatchNorm with another eps, adaptive pooling to a size that does not divide, softmax),
/// compared with PyTorch 2.14 on netc-fill v1 weights and input. The expected values came from an
/// equivalent `nn.Module` filled by `make_golden.py`'s `fill_state_dict` (input key "input",
/// shape [2, 4, 9, 11]).
#[test]
fn the_remaining_ops_match_pytorch() {
    let graph = compile_text(
        "network ops(x: [4, 9, 11]) {
  f = x |> conv(6, 3, 2, pad = 2, dilation = 2, groups = 2) @c
        |> lrn(3, alpha = 0.5, beta = 0.75, k = 1.5)
        |> maxpool(2, 1, pad = 1, dilation = 2, ceil_mode = true)
        |> avgpool(3, 2, pad = 1, ceil_mode = true)
        |> avgpool(2, 2, pad = 1, ceil_mode = true, count_include_pad = false)
        |> batchnorm(eps = 0.01) @bn
  p = f |> adaptive_avgpool((3, 2)) |> flatten |> linear(5) @fc |> softmax
  (p, f)
}",
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let file = filled_weights(&graph);
    let weights = file.bind(&graph).unwrap();
    let input = Tensor::new(vec![2, 4, 9, 11], fill::input(&[2, 4, 9, 11])).unwrap();
    let outputs = reference::run(&graph, &weights, &[input]).unwrap();
    #[rustfmt::skip]
    let probabilities = [
        0.1875606, 0.24562755, 0.17954722, 0.11490932, 0.2723552,
        0.17111313, 0.25795183, 0.14794096, 0.17849334, 0.24450065,
    ];
    #[rustfmt::skip]
    let features = [
        -0.19147965, 0.07040979, -0.20666642, -0.16906433, 0.26171833, -0.12917167,
        0.020857625, 0.16933268, -0.016419087, -0.02552102, 0.38928172, 0.1516579,
        0.06365751, -0.07652377, -0.30681732, 0.12434876, -0.23236619, -0.3946875,
        0.2406022, 0.32731432, 0.12471052, 0.30125183, 0.5592648, 0.29167196,
        0.20104498, 0.27559185, 0.0134671405, 0.1862172, 0.2643059, 0.1205113,
        -0.36356065, -0.061685793, -0.3661053, -0.25697398, 0.011208047, -0.3676568,
        -0.09864499, 0.022469725, -0.37572175, 0.012796148, 0.1489506, -0.34980193,
        -0.1343631, 0.24122575, 0.13998811, 0.085791565, 0.41770858, 0.1724087,
        0.07725671, 0.0040328926, -0.2568386, -0.2382136, 0.27062806, -0.07583921,
        0.22719522, 0.36004794, 0.19386102, 0.34594575, 0.70586586, 0.37140954,
        0.36485305, 0.36606315, 0.044234507, 0.34454414, 0.29193184, -0.05396029,
        -0.015527224, 0.4557732, -0.09033523, 0.17169185, 0.5234817, -0.009240219,
    ];
    assert_eq!(outputs[0].shape, vec![2, 5]);
    assert_eq!(outputs[1].shape, vec![2, 6, 2, 3]);
    for (got, expected) in [(&outputs[0].data, &probabilities[..]), (&outputs[1].data, &features[..])] {
        for (i, (&a, &b)) in got.iter().zip(expected).enumerate() {
            assert!((a - b).abs() <= 1e-5, "value {i}: {a} vs PyTorch {b}");
        }
    }
}

#[test]
fn inputs_are_checked_against_the_declared_shape() {
    let graph = compile(&model("resnet18"));
    let file = filled_weights(&graph);
    let weights = file.bind(&graph).unwrap();
    let run = |shape: Vec<usize>| {
        let n = shape.iter().product();
        reference::run(&graph, &weights, &[Tensor::new(shape, vec![0.0; n]).unwrap()])
            .unwrap_err()
            .to_string()
    };
    let expected = "input `image` of model `resnet18` must have shape [N, 3, 224, 224] (a batch of N >= 1 samples of [3, 224, 224])";
    assert_eq!(run(vec![3, 224, 224]), format!("{expected}, got [3, 224, 224]"));
    assert_eq!(run(vec![1, 3, 200, 200]), format!("{expected}, got [1, 3, 200, 200]"));
    assert_eq!(run(vec![0, 3, 224, 224]), format!("{expected}, got [0, 3, 224, 224]"));
    let err = reference::run(&graph, &weights, &[]).unwrap_err().to_string();
    assert_eq!(err, "model `resnet18` takes 1 input(s), but 0 were given");
}

#[test]
fn threads_do_not_change_the_result() {
    let graph = compile(&model("googlenet"));
    let file = filled_weights(&graph);
    let weights = file.bind(&graph).unwrap();
    let input = Tensor::new(vec![1, 3, 224, 224], fill::input(&[1, 3, 224, 224])).unwrap();
    let one = reference::run(&graph, &weights, std::slice::from_ref(&input)).unwrap();
    let three = reference::run_with(&graph, &weights, &[input], &reference::Options { threads: 3 }).unwrap();
    assert_eq!(one, three);
}
