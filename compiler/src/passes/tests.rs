//! Each pass on small graphs: where it must fire, and where it must not.

use super::*;
use crate::ir::{verify, ConvKind, Graph, Op, Relu};
use std::path::Path;

fn graph(text: &str) -> Graph {
    crate::compile_source(Path::new("test.net"), text, &Default::default()).unwrap_or_else(|d| panic!("{d}"))
}

/// Runs the named passes in pipeline order (verifying after each) and returns the graph.
fn run(text: &str, passes: &[&str]) -> Graph {
    let mut g = graph(text);
    for pass in PIPELINE.iter().filter(|p| passes.contains(&p.name())) {
        pass.run(&mut g, Isa::Avx512);
        verify(&g).unwrap_or_else(|e| panic!("after {}: {e}", pass.name()));
    }
    g
}

fn labels(g: &Graph) -> Vec<String> {
    g.topo_order().unwrap().into_iter().map(|id| g.node(id).op.label()).collect()
}

const UPTO_EPILOGUE: &[&str] = &["dead-code", "fold-batchnorm", "fuse-epilogue"];

#[test]
fn dead_code_turns_dropout_into_identity_and_drops_training_heads() {
    let g = run(
        "network n(x: [8]) {
           h = x |> linear(4) @fc1 |> dropout(0.5)
           train { aux = h |> linear(2) @aux }
           (h |> linear(2) @fc2, aux)
         }",
        &["dead-code"],
    );
    assert_eq!(labels(&g), ["input", "linear", "linear"]);
    assert_eq!(g.outputs.len(), 1);
}

#[test]
fn dead_code_keeps_everything_an_output_needs() {
    let g = run("network n(x: [3, 4, 4]) { a = x |> relu \n b = a |> maxpool(2) \n (b, a) }", &["dead-code"]);
    assert_eq!(labels(&g), ["input", "relu", "maxpool"]);
}

#[test]
fn batchnorm_after_a_conv_folds_into_its_weights() {
    let g = run(
        "network n(x: [3, 8, 8]) { x |> conv(4, 3, bias = false) @c |> batchnorm @bn }",
        &["fold-batchnorm"],
    );
    assert_eq!(labels(&g), ["input", "conv"]);
    let conv = g.node(g.find("c").unwrap());
    assert!(matches!(&conv.op, Op::Conv(c) if c.bias));
    assert!(conv.weights[0]
        .to_string()
        .starts_with("scale_rows(c.weight, bn_scale(bn.weight, bn.running_var"));
}

#[test]
fn batchnorm_does_not_fold_when_the_conv_output_is_also_read_elsewhere() {
    let g = run(
        "network n(x: [3, 8, 8]) { y = x |> conv(4, 3) @c \n z = y |> batchnorm @bn \n (z, y) }",
        &["fold-batchnorm"],
    );
    assert_eq!(labels(&g), ["input", "conv", "affine"]);
}

#[test]
fn batchnorm_without_a_conv_before_it_becomes_an_affine() {
    let g =
        run("network n(x: [4, 8, 8]) { x |> batchnorm @bn |> relu }", &["fold-batchnorm", "fuse-epilogue"]);
    assert_eq!(labels(&g), ["input", "affine+relu"]);
}

#[test]
fn conv_bias_and_relu_fuse() {
    let g = run("network n(x: [3, 8, 8]) { x |> conv(4, 3) @c |> relu }", UPTO_EPILOGUE);
    assert_eq!(labels(&g), ["input", "conv+bias+relu"]);
}

#[test]
fn a_relu_with_two_readers_of_the_conv_does_not_fuse() {
    let g = run(
        "network n(x: [3, 8, 8]) { y = x |> conv(4, 3) @c \n (y |> relu, y |> maxpool(2)) }",
        UPTO_EPILOGUE,
    );
    assert_eq!(labels(&g), ["input", "conv+bias", "relu", "maxpool"]);
}

#[test]
fn a_relu_whose_output_has_two_readers_still_fuses_into_the_conv() {
    let g = run(
        "network n(x: [3, 8, 8]) { y = x |> conv(4, 3) @c |> relu \n (y |> maxpool(2), y |> avgpool(2)) }",
        UPTO_EPILOGUE,
    );
    assert_eq!(labels(&g), ["input", "conv+bias+relu", "maxpool", "avgpool"]);
}

#[test]
fn a_residual_add_and_its_relu_fuse_into_the_conv_on_the_main_path() {
    let g = run(
        "network n(x: [4, 8, 8]) {
           short = x |> conv(4, 1, bias = false) @proj |> batchnorm @pbn
           y = x |> conv(4, 3, pad = 1, bias = false) @c1 |> batchnorm @bn1 |> relu
                 |> conv(4, 3, pad = 1, bias = false) @c2 |> batchnorm @bn2
           relu(y + short)
         }",
        UPTO_EPILOGUE,
    );
    let c2 = g.find("c2").unwrap();
    assert_eq!(g.node(c2).op.label(), "conv+bias+add+relu");
    assert_eq!(g.inputs(c2)[1], g.find("proj").unwrap().value());
    assert_eq!(g.node(g.find("proj").unwrap()).op.label(), "conv+bias");
}

#[test]
fn an_add_of_a_value_with_itself_is_not_fused() {
    let g = run("network n(x: [4, 8, 8]) { y = x |> conv(4, 1) @c \n y + y }", UPTO_EPILOGUE);
    assert_eq!(labels(&g), ["input", "conv+bias", "add"]);
}

#[test]
fn an_affine_after_a_residual_sum_fuses_as_post_affine() {
    let g = run(
        "network n(x: [4, 8, 8]) { y = x |> conv(4, 1, bias = false) @c \n (y + x) |> batchnorm @bn |> relu }",
        UPTO_EPILOGUE,
    );
    assert_eq!(labels(&g), ["input", "conv+add+affine+relu"]);
}

#[test]
fn an_affine_feeding_only_unpadded_convs_becomes_their_prologue() {
    let g = run(
        "network n(x: [4, 8, 8]) {
           p = x |> batchnorm @bn |> relu
           (p |> conv(8, 1, bias = false) @a, p |> conv(8, 1, 2, bias = false) @b)
         }",
        &["fold-batchnorm", "fuse-epilogue", "fuse-prologue"],
    );
    assert_eq!(labels(&g), ["input", "affine+relu+conv", "affine+relu+conv"]);
    assert_eq!(g.inputs(g.find("a").unwrap())[0], g.inputs[0]);
}

#[test]
fn an_affine_feeding_a_padded_conv_stays_on_its_own() {
    let g = run(
        "network n(x: [4, 8, 8]) { x |> batchnorm @bn |> relu |> conv(8, 3, pad = 1) @c }",
        &["fold-batchnorm", "fuse-epilogue", "fuse-prologue"],
    );
    assert_eq!(labels(&g), ["input", "affine+relu", "conv+bias"]);
}

#[test]
fn one_by_one_convs_become_gemms_and_strided_ones_subsample() {
    let g = run(
        "network n(x: [4, 8, 8]) { x |> conv(8, 1) @a |> conv(8, 1, 2) @b |> conv(8, 3) @c }",
        &["fuse-epilogue", "gemm-1x1"],
    );
    assert_eq!(labels(&g), ["input", "gemm1x1+bias", "subsample+gemm1x1+bias", "conv+bias"]);
}

#[test]
fn sibling_gemms_with_one_input_and_stride_merge_and_branches_read_slices() {
    let g = run(
        "network n(x: [4, 8, 8]) {
           a = x |> conv(8, 1, bias = false) @a |> batchnorm @abn |> relu |> conv(8, 3, pad = 1) @a2
           b = x |> conv(16, 1) @b |> conv(16, 3, pad = 1) @b2
           concat(a, b) |> conv(8, 1) @b3
         }",
        &["fold-batchnorm", "fuse-epilogue", "gemm-1x1", "merge-siblings-1x1"],
    );
    let merged = g.node_ids().find(|&id| g.node(id).name == "a|b").expect("merged node");
    let Op::FusedConv(f) = &g.node(merged).op else { panic!() };
    assert_eq!((f.conv.out_channels, f.relu), (24, Relu::First(8)));
    let mut slices: Vec<String> =
        g.consumers(merged.value()).iter().map(|&c| g.node(c).op.attrs_text()).collect();
    slices.sort();
    assert_eq!(slices, ["channels=0..8", "channels=8..24"]);
}

#[test]
fn siblings_with_different_strides_do_not_merge() {
    let g = run(
        "network n(x: [4, 8, 8]) { (x |> conv(8, 1) @a, x |> conv(8, 1, 2) @b) }",
        &["fuse-epilogue", "gemm-1x1", "merge-siblings-1x1"],
    );
    assert_eq!(labels(&g), ["input", "gemm1x1+bias", "subsample+gemm1x1+bias"]);
}

#[test]
fn a_sibling_that_feeds_a_concat_directly_is_left_to_write_into_it() {
    let g = run(
        "network n(x: [4, 8, 8]) {
           concat(x |> conv(8, 1) @a, x |> conv(4, 1) @r |> conv(8, 3, pad = 1) @b, x |> conv(4, 1) @r2 |> conv(8, 3, pad = 1) @c)
         }",
        &["fuse-epilogue", "gemm-1x1", "merge-siblings-1x1", "concat-in-place"],
    );
    assert!(g.find("a").is_some(), "branch 1 keeps its own GEMM");
    assert!(g.node_ids().any(|id| g.node(id).name == "r|r2"));
    assert!(labels(&g).contains(&"concat(in-place)".to_string()));
}

#[test]
fn consecutive_gemms_with_nothing_between_merge_into_one() {
    let g = run(
        "network n(x: [4, 8, 8]) { x |> conv(6, 1) @a |> conv(8, 1, 2) @b |> relu }",
        &["fuse-epilogue", "gemm-1x1", "merge-consecutive-1x1"],
    );
    assert_eq!(labels(&g), ["input", "subsample+gemm1x1+bias+relu"]);
    let b = g.node(g.find("b").unwrap());
    let Op::FusedConv(f) = &b.op else { panic!() };
    assert_eq!((f.conv.in_channels, f.conv.stride, f.kind), (4, [2, 2], ConvKind::StridedGemm1x1));
    assert_eq!(b.weights[0].to_string(), "matmul(b.weight, a.weight)");
}

#[test]
fn gemms_through_a_narrow_middle_stay_two_because_merging_would_add_work() {
    // 16 -> 4 -> 16: 64 + 64 multiply-adds per pixel, merged 256.
    let g = run(
        "network n(x: [16, 4, 4]) { x |> conv(4, 1) @a |> conv(16, 1) @b |> relu }",
        &["fuse-epilogue", "gemm-1x1", "merge-consecutive-1x1"],
    );
    assert_eq!(labels(&g), ["input", "gemm1x1+bias", "gemm1x1+bias+relu"]);
}

#[test]
fn gemms_with_a_relu_between_do_not_merge() {
    let g = run(
        "network n(x: [4, 8, 8]) { x |> conv(6, 1) @a |> relu |> conv(8, 1) @b }",
        &["fuse-epilogue", "gemm-1x1", "merge-consecutive-1x1"],
    );
    assert_eq!(labels(&g), ["input", "gemm1x1+bias+relu", "gemm1x1+bias"]);
}

#[test]
fn a_concat_whose_input_is_read_twice_copies() {
    let g = run(
        "network n(x: [4, 8, 8]) { a = x |> conv(4, 1) @a \n (concat(a, x |> conv(4, 1) @b), a) }",
        &["concat-in-place"],
    );
    assert!(labels(&g).contains(&"concat".to_string()));
}

#[test]
fn the_whole_pipeline_leaves_no_batchnorm_dropout_or_relu_in_any_seed_model() {
    for (path, mut g) in crate::testing::seed_models() {
        optimize(&mut g, &Options { verify_each: true, ..Options::default() }).unwrap();
        for id in g.node_ids() {
            let label = g.node(id).op.label();
            assert!(
                !["batchnorm", "dropout", "relu"].contains(&label.as_str()),
                "{}: {label}",
                path.display()
            );
            assert!(!g.node(id).name.starts_with("aux"), "{}: {}", path.display(), g.node(id).name);
        }
    }
}

const WITH_ACTIVATIONS: &[&str] =
    &["dead-code", "fold-batchnorm", "fuse-epilogue", "gemm-1x1", "fuse-activation"];

#[test]
fn an_activation_after_a_conv_joins_its_epilogue_last() {
    let g = run(
        "network n(x: [3, 8, 8]) {
           a = x |> conv(4, 3, pad = 1) @c1 |> batchnorm @bn |> relu6
           b = a |> conv(4, 1) @c2 |> hardswish
           c = b |> conv(4, 3, pad = 1) @c3 |> clamp(-1, 2)
           c |> conv(4, 1) @c4 |> silu
         }",
        WITH_ACTIVATIONS,
    );
    assert_eq!(
        labels(&g),
        ["input", "conv+bias+relu6", "gemm1x1+bias+hardswish", "conv+bias+clamp", "gemm1x1+bias+silu"]
    );
    assert!(g.node(g.find("c3").unwrap()).op.attrs_text().contains("clamp_min=-1 clamp_max=2"));
}

#[test]
fn an_activation_follows_a_residual_sum_and_its_relu() {
    let g = run(
        "network n(x: [4, 8, 8]) { y = x |> conv(4, 3, pad = 1) @c \n sigmoid(relu(y + x)) }",
        WITH_ACTIVATIONS,
    );
    assert_eq!(labels(&g), ["input", "conv+bias+add+relu+sigmoid"]);
}

#[test]
fn an_activation_whose_conv_output_is_read_elsewhere_stays_separate() {
    let g = run(
        "network n(x: [3, 8, 8]) { a = x |> conv(4, 3, pad = 1) @c \n (a |> hardsigmoid, a) }",
        WITH_ACTIVATIONS,
    );
    assert_eq!(labels(&g), ["input", "conv+bias", "hardsigmoid"]);
    // Two activations in a row: the first fuses, the second stays an elementwise op.
    let g =
        run("network n(x: [3, 8, 8]) { x |> conv(4, 3, pad = 1) @c |> relu6 |> sigmoid }", WITH_ACTIVATIONS);
    assert_eq!(labels(&g), ["input", "conv+bias+relu6", "sigmoid"]);
}

const WITH_CHANNEL_SCALE: &[&str] = &[
    "dead-code",
    "fold-batchnorm",
    "fuse-epilogue",
    "gemm-1x1",
    "chanvec",
    "fuse-channel-scale",
    "fuse-activation",
];

/// Squeeze-and-excitation (as EfficientNet writes it): the squeeze is read by the excitation's
/// 1x1 convolutions, the product `x * s` by the projection, which takes `x` and `s` and scales its
/// weights instead.
#[test]
fn a_channel_scale_feeding_a_1x1_gemm_moves_into_it() {
    let g = run(
        "network n(x: [24, 28, 28]) {
           s = x |> global_avgpool |> conv(6, 1) @fc1 |> silu |> conv(24, 1) @fc2 |> sigmoid
           x * s |> conv(40, 1) @project
         }",
        WITH_CHANNEL_SCALE,
    );
    assert!(!labels(&g).contains(&"mul".to_string()), "{:?}", labels(&g));
    let project = g.find("project").unwrap();
    assert_eq!(g.node(project).op.label(), "scale+gemm1x1+bias");
    let inputs = g.inputs(project);
    assert_eq!(inputs[0], g.inputs[0]);
    assert_eq!(inputs[1], g.find("fc2").unwrap().value());
}

/// The product stays when something else reads it, when a padded or channels-in-lanes convolution
/// reads it (a 7x7 plane with 512 output channels goes to `chanvec`, which keeps the product), or
/// when the factors are a whole feature map.
#[test]
fn a_channel_scale_stays_where_a_reader_cannot_take_it() {
    let se = "s = x |> global_avgpool |> conv(4, 1) @fc1 |> relu |> conv(x.c, 1) @fc2 |> sigmoid";
    for (body, why) in [
        ("y = x * s \n (y |> conv(16, 1) @c, y)", "the product is also an output"),
        ("x * s |> conv(16, 3, pad = 1) @c", "a padded 3x3 convolution"),
        ("(x * x |> conv(16, 1) @c, s)", "an elementwise square, not a channel scale"),
    ] {
        let g = run(&format!("network n(x: [32, 14, 14]) {{ {se} \n {body} }}"), WITH_CHANNEL_SCALE);
        assert!(labels(&g).contains(&"mul".to_string()), "{why}: {:?}", labels(&g));
    }
    let g =
        run(&format!("network n(x: [512, 7, 7]) {{ {se} \n x * s |> conv(512, 1) @c }}"), WITH_CHANNEL_SCALE);
    assert_eq!(g.node(g.find("c").unwrap()).op.label(), "chanvec+bias");
    assert!(labels(&g).contains(&"mul".to_string()));
}
