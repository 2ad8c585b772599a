//! The optimiser from the command line: stages, pass control, statistics and activation memory.

use crate::common::run_netc as run;
use crate::common::{model, SEED_MODELS};

fn optimized_json(name: &str, extra: &[&str]) -> serde_json::Value {
    let path = model(name);
    let mut args = vec!["ir", path.to_str().unwrap(), "--stage", "optimized", "--format", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn ops(v: &serde_json::Value) -> Vec<String> {
    v["nodes"].as_array().unwrap().iter().map(|n| n["op"].as_str().unwrap().to_string()).collect()
}

#[test]
fn no_seed_model_keeps_a_batchnorm_dropout_or_relu_node_and_googlenet_loses_its_aux_heads() {
    for name in SEED_MODELS {
        let v = optimized_json(name, &[]);
        for op in ops(&v) {
            assert!(!["batchnorm", "dropout", "relu"].contains(&op.as_str()), "{name}: {op}");
        }
        if *name == "googlenet" {
            let names: Vec<&str> =
                v["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
            assert!(names.iter().all(|n| !n.starts_with("aux")), "{names:?}");
        }
    }
}

#[test]
fn fused_nodes_name_their_parts() {
    let resnet = ops(&optimized_json("resnet50", &[]));
    assert!(resnet.contains(&"conv+bias+relu".to_string()));
    assert!(resnet.contains(&"gemm1x1+bias+add+relu".to_string()));
    assert!(resnet.contains(&"subsample+gemm1x1+bias+add+relu".to_string()));
    let preact = ops(&optimized_json("preact_resnet50", &[]));
    assert!(preact.iter().any(|op| op.starts_with("affine+relu+gemm1x1")));
    assert!(preact.contains(&"gemm1x1+add+affine+relu".to_string()));
    let googlenet = ops(&optimized_json("googlenet", &[]));
    assert_eq!(googlenet.iter().filter(|op| *op == "concat(in-place)").count(), 9);
    assert_eq!(googlenet.iter().filter(|op| *op == "slice").count(), 18);
}

#[test]
fn o0_and_disabled_passes_are_honoured() {
    let parsed = ops(&optimized_json("resnet18", &["-O0"]));
    assert!(parsed.contains(&"batchnorm".to_string()));
    let without_fusion = ops(&optimized_json("resnet18", &["--disable-pass", "fuse-epilogue"]));
    assert!(
        without_fusion.contains(&"relu".to_string()) && !without_fusion.contains(&"batchnorm".to_string())
    );
    let (code, _, err) = run(&[
        "ir",
        model("resnet18").to_str().unwrap(),
        "--stage",
        "optimized",
        "--disable-pass",
        "no-such-pass",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-pass"), "{err}");
}

#[test]
fn after_pass_stops_the_pipeline_there() {
    let after_fold = ops(&optimized_json("resnet18", &[]).clone());
    assert!(!after_fold.is_empty());
    let (code, out, _) = run(&["ir", model("resnet18").to_str().unwrap(), "--stage", "after:fold-batchnorm"]);
    assert_eq!(code, 0);
    assert!(!out.contains("batchnorm(") && out.contains(" relu(") && out.contains(" conv("), "{out}");
    let (code, _, err) = run(&["ir", model("resnet18").to_str().unwrap(), "--stage", "after:nothing"]);
    assert_ne!(code, 0);
    assert!(err.contains("no pass named `nothing`"), "{err}");
}

#[test]
fn list_passes_names_the_pipeline_in_order() {
    let (code, out, _) = run(&["ir", "--list-passes"]);
    assert_eq!(code, 0);
    let names: Vec<&str> = out.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "dead-code",
            "fold-batchnorm",
            "fuse-epilogue",
            "fuse-prologue",
            "gemm-1x1",
            "winograd",
            "depthwise",
            "merge-consecutive-1x1",
            "merge-siblings-1x1",
            "chanvec",
            "fuse-channel-scale",
            "fuse-activation",
            "concat-in-place"
        ]
    );
}

#[test]
fn stats_print_node_counts_per_op_before_and_after_each_pass() {
    let (code, _, err) = run(&["ir", model("resnet50").to_str().unwrap(), "--stage", "optimized", "--stats"]);
    assert_eq!(code, 0);
    assert!(err.contains("fold-batchnorm (53 rewrites): 176 -> 123 nodes"), "{err}");
    assert!(err.contains("batchnorm                           53 -> 0"), "{err}");
}

#[test]
fn summary_reports_planned_activation_memory_beside_the_naive_sum() {
    let (code, out, _) = run(&["summary", model("resnet50").to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let planned = v["activations"]["planned_bytes"].as_u64().unwrap();
    let naive = v["activations"]["naive_bytes"].as_u64().unwrap();
    assert!(planned > 0 && planned * 4 < naive, "{planned} vs {naive}");
    let (_, table, _) = run(&["summary", model("resnet50").to_str().unwrap()]);
    assert!(table.lines().last().unwrap().starts_with("activations per image:"), "{table}");
}

#[test]
fn tune_for_names_the_isa_the_chanvec_cost_model_plans_for() {
    let net = model("resnet50");
    for isa in ["avx512", "avx2"] {
        let (code, _, err) =
            run(&["ir", net.to_str().unwrap(), "--stage", "optimized", "--stats", "--tune-for", isa]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(&format!("layer4.1.conv1: 512 channels @7x7, K 2048, for {isa}")), "{err}");
    }
    // The fits: 512 -> 128 at 28x28 runs with channels in lanes on avx512 only (avx2's
    // channel-in-lanes kernels need K >= 1024 to win).
    let stats = |isa: &str| {
        run(&["ir", net.to_str().unwrap(), "--stage", "optimized", "--stats", "--tune-for", isa]).2
    };
    assert!(stats("avx512").lines().any(|l| l.contains("layer2.1.conv1:") && l.ends_with("-> chanvec")));
    assert!(stats("avx2")
        .lines()
        .any(|l| l.contains("layer2.1.conv1:") && l.ends_with("-> pixels in lanes")));
    let (code, _, err) = run(&["ir", net.to_str().unwrap(), "--tune-for", "avx1024"]);
    assert_ne!(code, 0);
    assert!(err.contains("avx1024"), "{err}");
}

/// DenseNet-121 writes each dense block into one buffer: the 58 concats (one per dense layer, each of
/// the block's input and every new feature so far) are all in place, each block's concats are
/// prefixes of its last one, each layer's new features are written once into their slice, and no
/// value is overwritten while live. The CLI says so too (`concat(in-place)` in the optimised IR).
#[test]
fn densenet121_concatenates_in_place_one_buffer_per_dense_block() {
    use netc_compiler::ir::Op;
    use netc_compiler::lower::program::Program;
    let concats = ops(&optimized_json("densenet121", &[]));
    assert_eq!(concats.iter().filter(|op| *op == "concat(in-place)").count(), 58);
    assert!(!concats.contains(&"concat".to_string()), "no concat copies");

    let mut g = crate::common::compile(&model("densenet121"));
    netc_compiler::passes::optimize(&mut g, &Default::default()).unwrap();
    let program = Program::new(g).unwrap();
    let (g, plan) = (program.graph(), program.plan());
    plan.check(g).unwrap();
    assert!(program.steps().iter().all(|s| !matches!(g.node(s.node).op, Op::Concat(_))), "no concat kernel");
    for (block, layers, channels) in [(1, 6, 256), (2, 12, 512), (3, 24, 1024), (4, 16, 1024)] {
        let last = g.consumers(
            g.find(&format!("features.denseblock{block}.denselayer{layers}.conv2")).unwrap().value(),
        );
        let whole = plan.values[&last[0].value()];
        assert_eq!(g.shape(last[0].value()).dims()[0], channels);
        for layer in 1..=layers {
            let conv2 = g.find(&format!("features.denseblock{block}.denselayer{layer}.conv2")).unwrap();
            let [c, h, w] = [
                g.shape(conv2.value()).dims()[0],
                g.shape(conv2.value()).dims()[1],
                g.shape(conv2.value()).dims()[2],
            ];
            let new = plan.values[&conv2.value()];
            let offset = (channels - (layers - layer + 1) * c) * h * w;
            assert_eq!(
                (new.buffer, new.offset, new.sample_stride),
                (whole.buffer, offset, whole.sample_stride),
                "block {block} layer {layer}"
            );
            // The layer's input (its 1x1 conv reads it through the BatchNorm-ReLU prologue) is the
            // prefix of the block buffer before its slice.
            let conv1 = g.find(&format!("features.denseblock{block}.denselayer{layer}.conv1")).unwrap();
            let input = plan.values[&g.inputs(conv1)[0]];
            assert_eq!((input.buffer, input.offset), (whole.buffer, 0), "block {block} layer {layer}");
            assert!(g.node(conv1).op.label().starts_with("affine+relu+"), "{}", g.node(conv1).op.label());
        }
    }
}
