//! The JIT backend against the reference interpreter: every seed model at batch 3 (batch 1 is in
//! `runtime_reference`, against PyTorch too), generated small graphs and single ops with awkward
//! shapes, and the machine code itself.

use crate::common::{assert_close_above, compile_text, filled_weights, jit_run_isa, model};
use netc_compiler::codegen::IsaChoice;
use netc_compiler::ir::Graph;
use netc_runtime::{fill, reference, Tensor};
use proptest::prelude::*;

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// Optimises `graph`, fills weights and a batch of `batch` inputs, runs both backends, compares.
fn jit_matches_reference(what: &str, graph: &Graph, batch: usize) {
    jit_matches_reference_above(what, graph, batch, 1e-6);
}

/// [`jit_matches_reference`] with the tolerance's scale at least `floor` (see `assert_close_above`).
fn jit_matches_reference_above(what: &str, graph: &Graph, batch: usize, floor: f32) {
    let file = filled_weights(graph);
    let weights = file.bind(graph).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut optimized = graph.clone();
    netc_compiler::passes::optimize(&mut optimized, &Default::default()).unwrap();
    let mut shape = vec![batch];
    shape.extend_from_slice(graph.shape(graph.inputs[0]).dims());
    let input = Tensor::new(shape.clone(), fill::input(&shape)).unwrap();
    let options = reference::Options { threads: 2 };
    let expected =
        reference::run_with(&optimized, &weights, std::slice::from_ref(&input), &options).unwrap().remove(0);
    for isa in crate::common::host_isas() {
        let got = jit_run_isa(&optimized, &weights, &input, 2, IsaChoice::Fixed(isa));
        let what = format!("{what} ({isa})");
        assert_close_above(&what, &got, &expected, floor);
        if expected.shape.len() == 2 && expected.shape[1] > 1 {
            for n in 0..batch {
                assert_eq!(argmax(got.sample(n)), argmax(expected.sample(n)), "{what}: top-1 of sample {n}");
            }
        }
    }
}

/// A seed model at batch 3, at a reduced input size where the model allows one (the work per sample
/// shrinks with the image; every layer still runs).
fn seed_model_at_batch_3(name: &str, size: Option<usize>) {
    let options = netc_compiler::Options { input_shape: size.map(|s| vec![3, s, s]) };
    let graph = netc_compiler::compile_file(&model(name), &options).unwrap_or_else(|d| panic!("{d}"));
    jit_matches_reference(&format!("{name} batch 3"), &graph, 3);
}

#[test]
fn alexnet_batch_3() {
    seed_model_at_batch_3("alexnet", Some(127));
}

#[test]
fn alexnet_paper_batch_3() {
    seed_model_at_batch_3("alexnet_paper", None);
}

#[test]
fn vgg_batch_3() {
    for name in ["vgg11", "vgg13", "vgg16", "vgg19"] {
        seed_model_at_batch_3(name, Some(64));
    }
}

#[test]
fn googlenet_batch_3() {
    seed_model_at_batch_3("googlenet", Some(112));
}

#[test]
fn resnets_batch_3() {
    for name in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "preact_resnet50"] {
        seed_model_at_batch_3(name, Some(96));
    }
}

fn single(text: &str) -> Graph {
    compile_text(text).unwrap_or_else(|d| panic!("{d}\n{text}"))
}

/// The kernels read a graph input where the caller holds it unless a view of it (a chunk's
/// slices, a flatten) or the graph's outputs need its arena copy; either way, on every ISA and at
/// batch 1 and 3, the JIT computes what the reference does.
#[test]
fn inputs_are_read_in_place_unless_a_view_needs_the_arena_copy() {
    use netc_runtime::jit::{Executable, WeightBuf};
    for (text, in_place) in [
        ("network a(x: [4, 6, 6]) { y = x |> conv(4, 3, pad = 1) @c \n relu(y + x) |> conv(3, 1) @d }", true),
        ("network b(x: [4, 6, 6]) { (p, q) = chunk(x, 2) \n concat(q |> conv(2, 1) @c, p) }", false),
        ("network c(x: [4, 3, 3]) { x |> flatten |> linear(5) @fc }", false),
        ("network d(x: [4, 3, 3]) { (x |> conv(2, 1) @c, x) }", false),
    ] {
        let g = single(text);
        let mut optimized = g.clone();
        netc_compiler::passes::optimize(&mut optimized, &Default::default()).unwrap();
        let program = netc_compiler::lower::Program::new(optimized).unwrap();
        let packed = netc_runtime::jit::pack(&program, &filled_weights(&g).bind(&g).unwrap()).unwrap();
        let exe = Executable::new(program, WeightBuf::owned(packed), Default::default()).unwrap();
        assert_eq!(exe.reads_input_in_place(0), in_place, "{text}");
        if !text.contains("(x |> conv(2, 1) @c, x)") {
            for batch in [1, 3] {
                jit_matches_reference(text, &g, batch);
            }
        }
    }
}

#[test]
fn awkward_convolutions_match() {
    for (input, conv) in [
        ("[3, 1, 1]", "conv(5, 1) @c"),
        ("[5, 2, 3]", "conv(7, 3, pad = 1) @c"),
        ("[13, 3, 3]", "conv(6, 3, 2, pad = 1, bias = false) @c"),
        ("[3, 23, 23]", "conv(8, 11, 4, pad = 2) @c"),
        ("[4, 9, 9]", "conv(6, 5, 2, pad = 2, groups = 2) @c"),
        ("[3, 17, 15]", "conv(9, 7, 4, pad = 3) @c"),
        ("[6, 10, 10]", "conv(6, 3, dilation = 2, pad = 2, groups = 6) @c"),
        ("[8, 7, 7]", "conv(12, 1, 2) @c"),
    ] {
        let g = single(&format!("network n(x: {input}) {{ x |> {conv} |> relu }}"));
        for batch in [1, 3] {
            jit_matches_reference(&format!("{input} {conv} batch {batch}"), &g, batch);
        }
    }
}

#[test]
fn awkward_pooling_lrn_and_heads_match() {
    for (input, ops) in [
        ("[3, 5, 5]", "maxpool(2, 2, pad = 1, ceil_mode = true)"),
        ("[5, 7, 7]", "maxpool(3, 2, ceil_mode = true)"),
        ("[3, 6, 6]", "avgpool(3, 2, pad = 1, ceil_mode = true)"),
        ("[3, 6, 6]", "avgpool(3, 2, pad = 1, ceil_mode = true, count_include_pad = false)"),
        ("[7, 13, 11]", "adaptive_avgpool((6, 4))"),
        ("[9, 3, 3]", "lrn(5, alpha = 1e-4, beta = 0.75, k = 2)"),
        ("[3, 2, 2]", "global_avgpool |> flatten |> linear(5) @fc |> softmax"),
    ] {
        let g = single(&format!("network n(x: {input}) {{ x |> {ops} }}"));
        for batch in [1, 3] {
            jit_matches_reference(&format!("{input} {ops} batch {batch}"), &g, batch);
        }
    }
}

#[test]
fn activations_products_chunks_and_shuffles_match() {
    for (input, body) in [
        ("[5, 7, 9]", "x |> conv(6, 3, pad = 1) @c |> relu6"),
        ("[3, 5, 5]", "x |> conv(4, 1) @c |> clamp(-0.5, 0.25)"),
        ("[3, 5, 5]", "x |> conv(4, 1) @c |> hardtanh"),
        ("[3, 9, 9]", "x |> conv(7, 3) @c |> sigmoid"),
        ("[3, 9, 9]", "x |> conv(7, 3) @c |> silu"),
        ("[3, 6, 11]", "x |> conv(5, 1) @c |> hardsigmoid"),
        ("[3, 6, 11]", "x |> conv(5, 1) @c |> hardswish"),
        // Squeeze-and-excitation: a per-channel scale from the pooled features, either side of `*`.
        (
            "[6, 7, 7]",
            "y = x |> conv(8, 3, pad = 1) @c |> silu\n s = y |> global_avgpool |> conv(2, 1) @fc1 |> relu |> conv(8, 1) @fc2 |> hardsigmoid\n y * s",
        ),
        ("[6, 7, 7]", "y = x |> conv(8, 1) @c\n s = y |> global_avgpool |> sigmoid\n s * y"),
        ("[4, 5, 5]", "y = x |> conv(4, 3, pad = 1) @c\n y * (x |> conv(4, 1) @d)"),
        // ShuffleNet's unit: split, one branch through convolutions, concat, shuffle.
        (
            "[8, 6, 6]",
            "(a, b) = chunk(x, 2)\n concat(a, b |> conv(4, 1) @c |> relu) |> channel_shuffle(2)",
        ),
        ("[7, 4, 4]", "(p, q, r) = chunk(x |> conv(7, 1) @c, 3)\n concat(r, p |> relu6, q)"),
        ("[6, 3, 5]", "x |> conv(12, 1) @c |> channel_shuffle(3) |> relu"),
        // A chunk's piece is a view: an activation of the whole value must not overwrite it in place
        // while the piece is still to be read.
        ("[6, 4, 4]", "y = x |> conv(6, 1) @c\n (a, _b) = chunk(y, 2)\n z = y |> hardswish\n concat(z, a)"),
    ] {
        let g = single(&format!("network n(x: {input}) {{\n {body}\n}}"));
        for batch in [1, 3] {
            jit_matches_reference(&format!("{input} {body} batch {batch}"), &g, batch);
        }
    }
}

/// Activations fused into convolution epilogues (`fuse-activation`), one layer per kernel family
/// (1x1 GEMM after a BatchNorm, strided 1x1, 3x3 row panels, Winograd, chanvec; a residual sum
/// then the activation on Winograd and on row panels): each optimises to one fused conv whose label ends in the activation, of
/// the expected family, and the JIT matches the reference on every ISA of the host.
#[test]
fn fused_activation_epilogues_match() {
    for (input, body, label) in [
        ("[16, 12, 12]", "x |> conv(24, 1) @c |> batchnorm @bn |> relu6", "gemm1x1+bias+relu6"),
        ("[16, 12, 12]", "x |> conv(24, 1, 2) @c |> hardswish", "subsample+gemm1x1+bias+hardswish"),
        ("[8, 15, 15]", "x |> conv(8, 3, 2, pad = 1) @c |> clamp(-0.5, 0.25)", "conv+bias+clamp"),
        ("[64, 28, 28]", "x |> conv(64, 3, pad = 1) @c |> silu", "winograd+bias+silu"),
        ("[512, 7, 7]", "x |> conv(256, 1) @c |> sigmoid", "chanvec+bias+sigmoid"),
        (
            "[16, 10, 10]",
            "y = x |> conv(16, 3, pad = 1) @c\n hardsigmoid(y + x)",
            "winograd+bias+add+hardsigmoid",
        ),
        ("[8, 9, 9]", "y = x |> conv(8, 5, pad = 2) @c\n relu6(y + x)", "conv+bias+add+relu6"),
    ] {
        let g = single(&format!("network n(x: {input}) {{\n {body}\n}}"));
        let mut optimized = g.clone();
        netc_compiler::passes::optimize(&mut optimized, &Default::default()).unwrap();
        let labels: Vec<String> =
            optimized.topo_order().unwrap().into_iter().map(|id| optimized.node(id).op.label()).collect();
        assert_eq!(labels, ["input", label], "{body}");
        for batch in [1, 3] {
            jit_matches_reference(&format!("{input} {body} batch {batch}"), &g, batch);
        }
    }
}

/// A random small network: a stem conv, then blocks chosen from residual units, inception-style
/// branches, pre-activation units, pooling, squeeze-and-excitation, inverted residuals and
/// ShuffleNet units, then a classifier head.
fn small_network() -> impl Strategy<Value = String> {
    let block = prop_oneof![
        (1usize..4, 1usize..3).prop_map(|(k, s)| format!(
            "x = (x |> conv({{x.c}}, {k}, {s}, pad = {}) @{{ID}}a |> batchnorm @{{ID}}b |> relu)",
            k / 2
        )),
        Just("y = x |> conv(x.c, 3, pad = 1, bias = false) @{ID}a |> batchnorm @{ID}b \n x = relu(y + x)".to_string()),
        Just("x = concat(x |> conv(3, 1) @{ID}a |> relu, x |> conv(2, 1) @{ID}r |> relu |> conv(5, 3, pad = 1) @{ID}c, x |> maxpool(3, 1, pad = 1, ceil_mode = true) |> conv(2, 1) @{ID}p)".to_string()),
        Just("p = x |> batchnorm @{ID}n |> relu \n x = (p |> conv(x.c, 1, bias = false) @{ID}a) + x".to_string()),
        Just("x = x |> maxpool(2, 2, ceil_mode = true)".to_string()),
        // Squeeze-and-excitation (SiLU, sigmoid, hardswish, the per-channel product).
        Just("s = x |> global_avgpool |> conv(2, 1) @{ID}f |> silu |> conv(x.c, 1) @{ID}g |> sigmoid \n x = (x |> hardswish) * s".to_string()),
        // An inverted residual: expansion, depthwise 3x3, linear projection (ReLU6, hardsigmoid).
        Just("y = x |> conv(x.c * 2, 1) @{ID}e |> relu6 |> conv(x.c * 2, 3, pad = 1, groups = x.c * 2) @{ID}d |> hardsigmoid |> conv(x.c, 1) @{ID}p \n x = x + y".to_string()),
        // A ShuffleNet unit: chunk, one branch through a convolution, concat, channel shuffle.
        Just("(a, b) = chunk(x, 2) \n y = concat(b |> conv(b.c, 1) @{ID}s |> clamp(-0.1, 0.3), a) \n x = y |> channel_shuffle(if y.c % 2 == 0 { 2 } else { 1 })".to_string()),
        // A DenseNet block, one concat per layer (each layer reads all features so far; in place,
        // one buffer for the block), with one-sided clamps.
        (1usize..4).prop_map(|n| format!("for i in 0..{n} as {{ID}}d{{{{i}}}} {{{{ x = concat(x, x |> batchnorm @n |> relu |> conv(4, 1, bias = false) @a |> clamp(min = -0.5) |> conv(2, 3, pad = 1) @b |> clamp(max = 0.5)) }}}}")),
        // The same in torchvision's form: every concat of all features so far, written out.
        Just("f1 = x |> conv(2, 3, pad = 1) @{ID}a \n f2 = concat(x, f1) |> conv(2, 1) @{ID}b \n x = concat(x, f1, f2) |> relu".to_string()),
    ];
    (1usize..9, 1usize..14, 1usize..5, prop::collection::vec(block, 1..5)).prop_map(
        |(c, size, classes, blocks)| {
            let mut body = format!("x = image |> conv({c}, 3, pad = 1) @stem\n");
            for (i, b) in blocks.iter().enumerate() {
                body += &b
                    .replace("{x.c}", "x.c")
                    .replace("{ID}", &format!("b{i}"))
                    .replace("{{", "{")
                    .replace("}}", "}");
                body += "\n";
            }
            body += &format!("x |> global_avgpool |> flatten |> linear({classes}) @fc");
            format!("network random(image: [3, {size}, {size}]) {{\n{body}\n}}")
        },
    )
}

/// Generated graphs per run: 24, or `NETC_PROPTEST_CASES` for a long run (each graph is checked on
/// every ISA the host has), e.g. `NETC_PROPTEST_CASES=10000 cargo test --profile ci-test --test integration
/// generated_small_networks_match`.
fn generated_cases() -> u32 {
    match std::env::var("NETC_PROPTEST_CASES") {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("NETC_PROPTEST_CASES={text:?} is not a count")),
        Err(_) => 24,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: generated_cases(), failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn generated_small_networks_match(text in small_network(), batch in prop::sample::select(vec![1usize, 3])) {
        // Some generated networks are invalid (e.g. pooling a 1x1 map); those must be diagnosed.
        if let Ok(graph) = compile_text(&text) {
            // A generated head may be one logit that cancels to ~1e-3 while its terms are ~0.1
            // (found at case ~300 of a 10,000-case run: |diff| 8e-7, f32 rounding of those terms).
            jit_matches_reference_above(&text, &graph, batch, 0.01);
        }
    }
}

#[test]
fn conv_kernels_use_the_vector_fma_of_each_isa() {
    use netc_compiler::codegen::{compile, CompileOptions, IsaChoice};
    // 32 columns fill whole vectors of every width (a narrower plane may take 8-lane tiles on an
    // AVX-512 host whose zmm FMAs run at the ymm rate).
    let g = single("network n(x: [16, 32, 32]) { x |> conv(16, 3, pad = 1) @c |> relu }");
    let program = netc_compiler::lower::Program::new(g).unwrap();
    for isa in crate::common::host_isas() {
        let options = CompileOptions { isa: IsaChoice::Fixed(isa), ..Default::default() };
        let compiled = compile(&program.requests(), options).unwrap();
        let kernel = &compiled.kernels[0];
        assert_eq!(kernel.implementation, format!("conv.rowpanel.{isa}"));
        let asm = kernel.disassembly();
        let register = match isa.name() {
            "avx512" => "zmm",
            "avx2" => "ymm",
            _ => "xmm",
        };
        let fmas = asm.lines().filter(|l| l.contains("vfmadd") && l.contains(register)).count();
        assert!(fmas >= 9, "{isa}: expected {register} FMAs:\n{asm}");
    }
}

/// A batch run as micro-batches (`MicroBatch`: one after the other, each in its own pass over a
/// smaller arena) computes bit for bit what the whole batch does: every kernel computes each
/// sample on its own. Checked on every ISA of the host, two threads, batch 5 in passes of 1, 2
/// (the last one short), 3 and more than the batch, on graphs with a squeeze-and-excitation
/// product, a chunk and a shuffle, an in-place concat, a residual, two outputs and an input read
/// where the caller holds it, and on EfficientNet-B0; the per-kernel profile of a run in
/// passes sums them, one time per kernel.
#[test]
fn micro_batches_compute_what_the_whole_batch_does_bit_for_bit() {
    use netc_runtime::jit::{Executable, MicroBatch, Session, WeightBuf};
    use std::num::NonZeroUsize;
    let efficientnet = netc_compiler::compile_file(&model("efficientnet_b0"), &Default::default())
        .unwrap_or_else(|d| panic!("{d}"));
    let graphs = [
        ("squeeze-and-excitation", single("network a(x: [6, 9, 9]) {\n y = x |> conv(16, 1) @c |> silu\n s = y |> global_avgpool |> conv(4, 1) @fc1 |> relu |> conv(16, 1) @fc2 |> sigmoid\n y * s |> conv(6, 1) @p\n}")),
        ("chunk and shuffle", single("network b(x: [8, 6, 6]) {\n (a, b) = chunk(x, 2)\n concat(a, b |> conv(4, 1) @c |> relu) |> channel_shuffle(2)\n}")),
        ("residual, two outputs", single("network c(x: [4, 8, 8]) {\n y = x |> conv(4, 3, pad = 1) @c\n z = relu(y + x)\n (z |> conv(3, 1) @d, z |> global_avgpool |> flatten |> linear(5) @fc)\n}")),
        ("efficientnet_b0", efficientnet),
    ];
    let batch = 5;
    for (what, graph) in graphs {
        let mut optimized = graph.clone();
        netc_compiler::passes::optimize(&mut optimized, &Default::default()).unwrap();
        let weights = filled_weights(&graph);
        let weights = weights.bind(&graph).unwrap();
        let mut shape = vec![batch];
        shape.extend_from_slice(graph.shape(graph.inputs[0]).dims());
        let input = Tensor::new(shape.clone(), fill::input(&shape)).unwrap();
        for isa in crate::common::host_isas() {
            let program = netc_compiler::lower::Program::new(optimized.clone()).unwrap();
            let packed = netc_runtime::jit::pack(&program, &weights).unwrap();
            let options = netc_compiler::codegen::CompileOptions {
                isa: IsaChoice::Fixed(isa),
                check_bounds: true,
                ..Default::default()
            };
            let exe = Executable::new(program, WeightBuf::owned(packed), options).unwrap();
            let mut whole_session = Session::new(2).with_micro_batch(MicroBatch::Whole);
            assert_eq!(exe.micro_batch(&whole_session, batch), batch);
            let whole = exe.run(&mut whole_session, &[input.view()]).unwrap();
            for samples in [1, 2, 3, 7] {
                let split = MicroBatch::Samples(NonZeroUsize::new(samples).unwrap());
                let mut session = Session::new(2).with_micro_batch(split);
                assert_eq!(exe.micro_batch(&session, batch), samples.min(batch));
                let got = exe.run(&mut session, &[input.view()]).unwrap();
                assert_eq!(got.len(), whole.len(), "{what} ({isa})");
                for (g, w) in got.iter().zip(&whole) {
                    assert_eq!(g.shape, w.shape, "{what} ({isa}), passes of {samples}");
                    let same = g.data.iter().zip(&w.data).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{what} ({isa}): passes of {samples} differ from the whole batch");
                }
                let times = exe.run_profiled(&mut session, &[input.view()]).unwrap();
                assert_eq!(times.len(), exe.kernels().kernels.len(), "{what} ({isa})");
            }
        }
    }
}
