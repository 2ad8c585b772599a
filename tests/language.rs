//! The `.net` language, feature by feature: each test is a small network and what it must become.

use crate::common::compile_text;
use netc_compiler::ir::{Graph, Op, Shape};

fn graph(text: &str) -> Graph {
    compile_text(text).unwrap_or_else(|d| panic!("{d}"))
}

fn output_shape(g: &Graph) -> Shape {
    g.shape(g.outputs[0].value).clone()
}

fn scopes(g: &Graph) -> Vec<String> {
    let order = g.topo_order().expect("acyclic");
    order.into_iter().filter_map(|id| g.node(id).scope.clone()).collect()
}

fn ops(g: &Graph) -> Vec<&'static str> {
    g.topo_order().expect("acyclic").into_iter().map(|id| g.node(id).op.name()).collect()
}

#[test]
fn a_pipeline_feeds_each_stage_into_the_next() {
    let g = graph("network n(x: [3, 32, 32]) { x |> conv(8, 3, pad = 1) @c |> relu |> maxpool(2) }");
    assert_eq!(ops(&g), ["input", "conv", "relu", "maxpool"]);
    assert_eq!(output_shape(&g), Shape::chw(8, 16, 16));
}

#[test]
fn named_values_and_calls_are_the_same_graph_as_pipelines() {
    let piped = graph("network n(x: [3, 8, 8]) { x |> conv(4, 1) @c |> relu }");
    let named = graph("network n(x: [3, 8, 8]) { y = conv(x, 4, 1) @c \n relu(y) }");
    assert_eq!(netc_compiler::ir::print::to_text(&piped), netc_compiler::ir::print::to_text(&named));
}

#[test]
fn blocks_take_defaults_and_named_arguments_and_own_their_weights() {
    let g = graph(
        "block unit(x, out, k = 3, stride = 1) { x |> conv(out, k, stride, pad = k // 2) @conv }
         network n(x: [3, 32, 32]) {
           a = x |> unit(8) @first
           a |> unit(16, stride = 2, k = 5) @second
         }",
    );
    assert_eq!(scopes(&g), ["first.conv", "second.conv"]);
    assert_eq!(output_shape(&g), Shape::chw(16, 16, 16));
    let Op::Conv(c) = &g.node(g.find("second.conv").unwrap()).op else { panic!("conv") };
    assert_eq!((c.kernel, c.stride, c.padding), ([5, 5], [2, 2], [2, 2]));
}

#[test]
fn a_default_may_use_earlier_parameters() {
    let g = graph(
        "block pool(x, k, stride = k) { x |> maxpool(k, stride) }
         network n(x: [3, 32, 32]) { x |> pool(4) }",
    );
    assert_eq!(output_shape(&g), Shape::chw(3, 8, 8));
}

#[test]
fn for_loops_give_an_index_and_a_scope_per_iteration() {
    let g = graph(
        "network n(x: [4, 8, 8]) {
           for k, (c, n) in [(4, 2), (8, 1)] as stage{k + 1} {
             for i in 0..n { x = x |> conv(c, 3, pad = 1) @{i} }
           }
           x
         }",
    );
    assert_eq!(scopes(&g), ["stage1.0", "stage1.1", "stage2.0"]);
}

#[test]
fn conditionals_and_arithmetic_run_at_compile_time() {
    let g = graph(
        "network n(x: [6, 8, 8]) {
           half = x.c / 2
           width = if half == 3.0 and not (x.h != 8) { x.c * 2 - 1 + 7 % 4 // 2 } else { 1 }
           x |> conv(width, 1) @c
         }",
    );
    // 6 * 2 - 1 + (7 % 4) // 2 = 11 + 1 = 12
    assert_eq!(output_shape(&g), Shape::chw(12, 8, 8));
}

#[test]
fn shape_queries_read_channels_height_and_width() {
    let g = graph("network n(x: [5, 12, 7]) { x |> conv(x.c + x.h + x.w, 1) @c }");
    assert_eq!(output_shape(&g), Shape::chw(24, 12, 7));
}

#[test]
fn residual_plus_adds_two_values_of_one_shape() {
    let g = graph("network n(x: [4, 8, 8]) { y = x |> conv(4, 3, pad = 1) @c \n relu(y + x) }");
    assert_eq!(ops(&g), ["input", "conv", "add", "relu"]);
    let add = g.find("add").unwrap();
    assert_eq!(g.inputs(add).len(), 2);
}

#[test]
fn concat_joins_branches_on_channels() {
    let g = graph(
        "network n(x: [4, 8, 8]) {
           concat(x |> conv(2, 1) @a, x |> conv(3, 3, pad = 1) @b, x |> maxpool(3, 1, pad = 1))
         }",
    );
    assert_eq!(output_shape(&g), Shape::chw(9, 8, 8));
}

#[test]
fn sequential_numbers_every_layer_like_nn_sequential() {
    let g = graph(
        "network n(x: [3, 16, 16]) {
           sequential features { x = x |> conv(4, 3) |> relu |> maxpool(2) |> conv(4, 3) |> relu }
           x = x |> flatten
           sequential classifier { x |> dropout |> linear(10) }
         }",
    );
    assert_eq!(
        scopes(&g),
        [
            "features.0",
            "features.1",
            "features.2",
            "features.3",
            "features.4",
            "classifier.0",
            "classifier.1"
        ]
    );
}

#[test]
fn an_explicit_scope_inside_sequential_is_relative_and_keeps_the_count() {
    let g = graph(
        "network n(x: [3, 8, 8]) {
           sequential body { x |> conv(4, 1) |> relu @act |> conv(4, 1) }
         }",
    );
    assert_eq!(scopes(&g), ["body.0", "body.act", "body.1"]);
}

#[test]
fn train_marks_auxiliary_heads_training_only_and_their_outputs_too() {
    let g = graph(
        "network n(x: [3, 8, 8]) {
           y = x |> conv(4, 1) @trunk
           train { aux = y |> flatten |> linear(10) @aux }
           logits = y |> flatten |> linear(10) @fc
           (logits, aux)
         }",
    );
    assert!(g.node(g.find("aux").unwrap()).training_only);
    assert!(!g.node(g.find("fc").unwrap()).training_only);
    assert_eq!(g.outputs.iter().map(|o| o.training_only).collect::<Vec<_>>(), [false, true]);
    assert_eq!(g.inference_outputs().count(), 1);
}

#[test]
fn dropout_stays_in_the_ir_as_a_layer_of_the_training_graph() {
    let g = graph("network n(x: [8]) { x |> dropout(0.3) |> linear(2) @fc }");
    assert_eq!(ops(&g), ["input", "dropout", "linear"]);
}

#[test]
fn shape_assertions_pass_silently_and_allow_wildcards() {
    graph("network n(x: [3, 8, 8]) { x |> maxpool(2) : [3, 4, 4] |> flatten : [_] }");
}

#[test]
fn the_batch_size_is_not_part_of_the_declared_shape() {
    let g = graph("network n(x: [3, 8, 8]) { x |> flatten }");
    assert_eq!(output_shape(&g), Shape::vector(192));
}

#[test]
fn use_brings_blocks_from_another_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::fs::write(
        dir.path().join("lib/unit.net"),
        "# shared\nblock unit(x) { x |> conv(2, 1) @conv |> relu }\n",
    )
    .unwrap();
    let main = dir.path().join("main.net");
    std::fs::write(
        &main,
        "use \"lib/unit.net\"\nuse \"lib/unit.net\"\nnetwork n(x: [3, 4, 4]) { x |> unit @u }\n",
    )
    .unwrap();
    let g = netc_compiler::compile_file(&main, &Default::default()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(scopes(&g), ["u.conv"]);
}

#[test]
fn comments_run_to_the_end_of_the_line() {
    graph("# a model\nnetwork n(x: [3, 8, 8]) { # the body\n  x |> relu # activation\n}\n");
}

#[test]
fn pooling_follows_pytorch_output_size_rules() {
    // ceil_mode keeps a last window that starts inside the input: 112 -> 56 with (3, 2, ceil).
    let g = graph("network n(x: [1, 112, 112]) { x |> maxpool(3, 2, ceil_mode = true) }");
    assert_eq!(output_shape(&g), Shape::chw(1, 56, 56));
    // ...but drops one that would start in the right padding: 5 with (2, 2, pad 1, ceil) gives 3.
    let g = graph("network n(x: [1, 5, 5]) { x |> maxpool(2, 2, pad = 1, ceil_mode = true) }");
    assert_eq!(output_shape(&g), Shape::chw(1, 3, 3));
    // Dilation widens the window: 10 with (3, dilation 2) gives 6.
    let g = graph("network n(x: [1, 10, 10]) { x |> maxpool(3, 1, dilation = 2) }");
    assert_eq!(output_shape(&g), Shape::chw(1, 6, 6));
}

#[test]
fn convolution_handles_stride_padding_dilation_and_groups() {
    let g = graph("network n(x: [8, 15, 9]) { x |> conv(4, (3, 1), (2, 1), pad = (2, 0), dilation = 2, groups = 4) @c }");
    // height: (15 + 4 - 2*2 - 1) / 2 + 1 = 8; width: (9 - 0 - 1) / 1 + 1 = 9
    assert_eq!(output_shape(&g), Shape::chw(4, 8, 9));
    let id = g.find("c").unwrap();
    assert_eq!(g.node(id).op.weights()[0].shape, [4, 2, 3, 1]);
}

#[test]
fn adaptive_and_global_pooling_fix_the_output_size() {
    let g = graph(
        "network n(x: [3, 13, 17]) { a = x |> adaptive_avgpool((6, 4)) : [3, 6, 4] \n a |> global_avgpool }",
    );
    assert_eq!(output_shape(&g), Shape::chw(3, 1, 1));
}

#[test]
fn a_network_returns_a_tuple_of_outputs_in_order() {
    let g = graph("network n(x: [3, 4, 4]) { a = x |> relu \n b = x |> maxpool(2) \n (b, a) }");
    let names: Vec<&str> = g.outputs.iter().map(|o| g.node(o.value.producer()).name.as_str()).collect();
    assert_eq!(names, ["maxpool", "relu"]);
}

#[test]
fn a_utf8_byte_order_mark_is_ignored() {
    let text = "network n(x: [3, 4, 4]) { x |> relu }";
    let with_bom = graph(&format!("\u{feff}{text}"));
    assert_eq!(netc_compiler::ir::print::to_text(&with_bom), netc_compiler::ir::print::to_text(&graph(text)));
    // Only a leading mark: one inside the text is still not a token.
    assert!(compile_text("network n(x: [3, 4, 4]) { \u{feff}x |> relu }").is_err());
}

#[test]
fn an_if_without_else_is_a_statement() {
    let g = graph("network n(x: [3, 8, 8]) { y = x \n if x.c == 3 { y = y |> relu } \n if x.c == 4 { y = y |> flatten } \n y }");
    assert_eq!(ops(&g), ["input", "relu"]);
    assert!(compile_text("network n(x: [3, 8, 8]) { y = if x.c == 3 { x |> relu } \n y }").is_err());
}

#[test]
fn a_named_tensor_must_be_used_unless_its_name_starts_with_an_underscore() {
    assert!(compile_text("network n(x: [3, 8, 8]) { y = x |> relu \n x |> maxpool(2) }").is_err());
    let g = graph("network n(x: [3, 8, 8]) { _y = x |> relu \n x |> maxpool(2) }");
    assert_eq!(output_shape(&g), Shape::chw(3, 4, 4));
}

/// Writes `files` (relative path, text) under a new temporary folder.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn use_as_puts_a_files_blocks_under_a_name() {
    let dir = tree(&[
        ("lib/units.net", "block unit(x) { x |> conv(2, 1) @conv |> relu }\nblock pair(x) { x |> unit @a |> unit @b }\n"),
        (
            "main.net",
            "use \"lib/units.net\" as lib\nblock unit(x) { x |> relu }\nnetwork n(x: [3, 4, 4]) { x |> lib.pair @p |> unit }\n",
        ),
    ]);
    let g = netc_compiler::compile_file(&dir.path().join("main.net"), &Default::default())
        .unwrap_or_else(|d| panic!("{d}"));
    // `pair` calls its own file's `unit` (a conv), the network its own (a relu).
    assert_eq!(scopes(&g), ["p.a.conv", "p.b.conv"]);
    assert_eq!(ops(&g), ["input", "conv", "relu", "conv", "relu", "relu"]);
}

#[test]
fn use_looks_in_netc_path_then_in_the_shipped_models() {
    let lib = tree(&[("extra/unit.net", "block unit(x) { x |> relu }\n")]);
    let dir = tree(&[(
        "main.net",
        "use \"extra/unit.net\"\nuse \"blocks/resnet.net\"\nnetwork n(x: [3, 64, 64]) { x |> unit |> resnet_stem }\n",
    )]);
    let main = dir.path().join("main.net");
    let out = crate::common::netc().arg("check").arg(&main).env("NETC_PATH", lib.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = crate::common::netc().arg("check").arg(&main).env_remove("NETC_PATH").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot find `extra/unit.net`"), "{err}");
    let tried = dir.path().join("extra/unit.net");
    assert!(err.contains(&format!("not at {}", tried.display())), "the error lists the paths tried: {err}");
}

#[test]
fn a_scope_segment_names_a_loop_variable_only_in_braces() {
    let text = |seg: &str| {
        format!("network n(x: [3, 4, 4]) {{ for i in 0..2 {{ x = x |> conv(3, 1) @{seg} }} \n x }}")
    };
    assert_eq!(scopes(&graph(&text("layer.{i}"))), ["layer.0", "layer.1"]);
    assert!(compile_text(&text("layer.i")).is_err(), "`@layer.i` in `for i` is a mistake");
    // The text itself, when meant, is written as a string (here it repeats, so it is used twice).
    let d = compile_text(&text("layer.{\"i\"}")).unwrap_err();
    assert!(d.message.contains("weight scope `layer.i` is used twice"), "{d}");
}

#[test]
fn activations_are_layers_with_pytorch_names_and_arguments() {
    use netc_compiler::ir::Activation;
    let g = graph(
        "network n(x: [3, 4, 4]) {
           x |> relu6 |> clamp(-1, 2.5) |> hardtanh |> hardtanh(min_val = -2) |> sigmoid |> silu
             |> hardsigmoid |> hardswish |> clamp(min = 0.5) |> clamp(max = 6) |> clamp(0)
         }",
    );
    assert_eq!(
        ops(&g),
        [
            "input",
            "relu6",
            "clamp",
            "clamp",
            "clamp",
            "sigmoid",
            "silu",
            "hardsigmoid",
            "hardswish",
            "clamp",
            "clamp",
            "clamp"
        ]
    );
    let clamps: Vec<Activation> = g
        .node_ids()
        .filter_map(|id| match g.node(id).op {
            Op::Activation(a @ Activation::Clamp { .. }) => Some(a),
            _ => None,
        })
        .collect();
    // Either bound alone, as `torch.clamp` takes them (`clamp(0)` is `torch.clamp(x, 0)`: a minimum).
    for want in [
        (Some(0.0), Some(6.0)),
        (Some(-1.0), Some(2.5)),
        (Some(-1.0), Some(1.0)),
        (Some(-2.0), Some(1.0)),
        (Some(0.5), None),
        (None, Some(6.0)),
        (Some(0.0), None),
    ] {
        assert!(clamps.contains(&Activation::Clamp { min: want.0, max: want.1 }), "{want:?} in {clamps:?}");
    }
    assert_eq!(output_shape(&g), Shape::chw(3, 4, 4));
    for (text, message) in [
        ("x |> clamp(2, 1)", "min <= max"),
        ("x |> clamp", "`clamp` needs a bound: give min, max or both"),
        ("x |> clamp(max = 1, min = 2)", "min <= max"),
        ("x |> Hardswish", "did you mean `hardswish`?"),
        ("x |> swish", "did you mean `silu`?"),
        ("x |> mul(x)", "written with `*`"),
    ] {
        let d = compile_text(&format!("network n(x: [3, 4, 4]) {{ {text} }}")).unwrap_err().to_string();
        assert!(d.contains(message), "{text}: {d}");
    }
}

#[test]
fn products_broadcast_one_factor_per_channel_on_either_side() {
    for text in ["x * s", "s * x"] {
        let g = graph(&format!("network n(x: [8, 5, 5]) {{ s = x |> global_avgpool |> sigmoid \n {text} }}"));
        let mul = g.node_ids().find(|&id| g.node(id).op == Op::Mul).unwrap();
        let inputs = g.inputs(mul);
        assert_eq!((g.shape(inputs[0]), g.shape(inputs[1])), (&Shape::chw(8, 5, 5), &Shape::chw(8, 1, 1)));
        assert_eq!(output_shape(&g), Shape::chw(8, 5, 5));
    }
    let g = graph("network n(x: [8, 5, 5]) { x * x }");
    assert_eq!(ops(&g), ["input", "mul"]);
    for bad in ["x * (x |> maxpool(2))", "x * (x |> conv(4, 1) @c)", "x * 2"] {
        let d = compile_text(&format!("network n(x: [8, 5, 5]) {{ {bad} }}")).unwrap_err().to_string();
        assert!(d.contains("cannot multiply") || d.contains("cannot combine"), "{bad}: {d}");
    }
}

#[test]
fn chunk_splits_channels_like_torch_and_destructures() {
    let g = graph("network n(x: [7, 3, 3]) { (a, b, c) = chunk(x, 3) \n concat(c, b, a) }");
    let slices: Vec<(usize, usize)> = g
        .topo_order()
        .unwrap()
        .into_iter()
        .filter_map(|id| match &g.node(id).op {
            Op::Slice(s) => Some((s.start, s.len)),
            _ => None,
        })
        .collect();
    assert_eq!(slices, [(0, 3), (3, 3), (6, 1)]);
    assert_eq!(output_shape(&g), Shape::chw(7, 3, 3));
    let g = graph("network n(x: [8, 3, 3]) { (a, _b) = x |> chunk(2, dim = 1) \n a }");
    assert_eq!(output_shape(&g), Shape::chw(4, 3, 3));
    for (text, message) in [
        ("(a, b) = chunk(x, 2, dim = 2) \n a + b", "splits channels only"),
        ("(a, b) = chunk(x, 0) \n a + b", "at least 1 piece"),
        ("(a, b) = chunk(x, 3) \n a + b", "cannot unpack a list of 3 items into 2 names"),
        ("(a, b) = chunk(x, 2) @s \n a + b", "takes no scope"),
    ] {
        let d = compile_text(&format!("network n(x: [8, 3, 3]) {{ {text} }}")).unwrap_err().to_string();
        assert!(d.contains(message), "{text}: {d}");
    }
}

#[test]
fn channel_shuffle_needs_groups_that_divide_the_channels() {
    let g = graph("network n(x: [12, 3, 3]) { x |> channel_shuffle(3) }");
    assert_eq!(ops(&g), ["input", "channel_shuffle"]);
    let d = compile_text("network n(x: [10, 3, 3]) { x |> channel_shuffle(3) }").unwrap_err().to_string();
    assert!(d.contains("must divide the 10 channels"), "{d}");
}

#[test]
fn quoted_scope_segments_spell_any_torchvision_key() {
    let g = graph(
        "network n(x: [3, 8, 8]) {
           for i in 0..2 as trunk_output.block1 {
             x = x |> conv(4, 1) @\"block1-\"{i}.\"f-a\" |> relu
           }
           x
         }",
    );
    assert_eq!(scopes(&g), ["trunk_output.block1.block1-0.f-a", "trunk_output.block1.block1-1.f-a"]);
    let key = |id| g.node(id).weights[0].to_string();
    let conv = g.find("trunk_output.block1.block1-1.f-a").unwrap();
    assert_eq!(key(conv), "trunk_output.block1.block1-1.f-a.weight");
    // The hint for an unquoted hyphen quotes what the key needs, and the quoted spelling works.
    for (scope, fixed) in [("b.block1-0.c", "b.\"block1-0\".c"), ("b{1}-2", "b{1}\"-2\"")] {
        let d = compile_text(&format!("network n(x: [3, 8, 8]) {{ x |> conv(4, 1) @{scope} }}")).unwrap_err();
        assert!(d.to_string().contains(&format!("`{fixed}`")), "{d}");
        graph(&format!("network n(x: [3, 8, 8]) {{ x |> conv(4, 1) @{fixed} }}"));
    }
}
