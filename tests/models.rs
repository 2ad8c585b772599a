//! The seed models: parameter and MAC totals from models.md (torchvision's metadata and the papers),
//! layer shapes from the AlexNet paper, torchvision's key names, and golden text IR.

use crate::common::{compile, model, root, SEED_MODELS};
use netc_compiler::ir::{print, summarize, verify, Graph, Op, Shape};

/// (model, params, MACs in units of 1e6 as models.md rounds them: (value, decimals shown)).
const TOTALS: &[(&str, u64, f64)] = &[
    ("alexnet", 61_100_840, 0.714e9),
    ("vgg11", 132_863_336, 7.609e9),
    ("vgg13", 133_047_848, 11.31e9),
    ("vgg16", 138_357_544, 15.47e9),
    ("vgg19", 143_667_240, 19.63e9),
    ("googlenet", 6_624_904, 1.498e9),
    ("resnet18", 11_689_512, 1.814e9),
    ("resnet34", 21_797_672, 3.664e9),
    ("resnet50", 25_557_032, 4.089e9),
    ("resnet101", 44_549_160, 7.801e9),
    ("resnet152", 60_192_808, 11.51e9),
];

#[test]
fn every_seed_model_compiles_and_verifies() {
    for name in SEED_MODELS {
        let g = compile(&model(name));
        verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn parameter_totals_equal_torchvision_exactly_and_macs_to_models_md_precision() {
    for &(name, params, macs) in TOTALS {
        let s = summarize(&compile(&model(name)), false);
        assert_eq!(s.total_params, params, "{name} params");
        // models.md gives 4 significant digits.
        let rel = (s.total_macs as f64 - macs).abs() / macs;
        assert!(rel < 6e-4, "{name}: {} MACs vs {macs}", s.total_macs);
    }
}

#[test]
fn paper_variants_have_the_parameter_counts_of_their_pytorch_builds() {
    assert_eq!(summarize(&compile(&model("alexnet_paper")), false).total_params, 62_378_344);
    assert_eq!(summarize(&compile(&model("preact_resnet50")), false).total_params, 25_549_352);
}

#[test]
fn googlenet_counts_its_auxiliary_classifiers_only_when_training() {
    let g = compile(&model("googlenet"));
    assert_eq!(summarize(&g, false).total_params, 6_624_904);
    assert_eq!(summarize(&g, true).total_params, 13_004_888);
    assert!(summarize(&g, false).layers.iter().all(|l| !l.name.starts_with("aux") && l.op != "dropout"));
}

#[test]
fn alexnet_paper_layer_shapes_are_the_papers() {
    let g = compile(&model("alexnet_paper"));
    let shape = |name: &str| g.node(g.find(name).unwrap_or_else(|| panic!("{name}"))).shape.clone();
    // (name, C, H, W): conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5.
    let expected = [
        ("features.0", 96, 55, 55),
        ("features.2", 96, 27, 27),
        ("features.4", 256, 27, 27),
        ("features.6", 256, 13, 13),
        ("features.8", 384, 13, 13),
        ("features.10", 384, 13, 13),
        ("features.12", 256, 13, 13),
        ("features.14", 256, 6, 6),
    ];
    for (name, c, h, w) in expected {
        assert_eq!(shape(name), Shape::chw(c, h, w), "{name}");
    }
    assert!(matches!(g.node(g.find("features.3").unwrap()).op, Op::Lrn(_)));
}

fn weight_keys(g: &Graph, train: bool) -> Vec<String> {
    let mut keys = Vec::new();
    for id in g.node_ids() {
        let node = g.node(id);
        if node.training_only && !train {
            continue;
        }
        for w in node.op.weights() {
            keys.push(format!("{}.{}", node.scope.as_deref().unwrap(), w.suffix));
        }
    }
    keys.sort();
    keys
}

/// The tensor names and shapes in a safetensors file's JSON header.
fn safetensors_header(path: &std::path::Path) -> Vec<(String, String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut out = Vec::new();
    for (k, v) in header.as_object().unwrap() {
        if k == "__metadata__" {
            continue;
        }
        let shape = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        out.push((k.clone(), v["dtype"].as_str().unwrap().to_string(), shape));
    }
    out
}

#[test]
fn googlenet_weight_names_and_shapes_equal_a_real_torchvision_state_dict() {
    // Saved from torchvision's GoogLeNet(aux_logits=False) by tests/golden/pytorch/make_golden.py.
    let file = root().join("tests/golden/pytorch/googlenet_torchvision_f16.safetensors");
    let header = safetensors_header(&file);
    let g = compile(&model("googlenet"));
    let mut ours: Vec<(String, Vec<usize>)> = Vec::new();
    for id in g.node_ids() {
        let node = g.node(id);
        if !node.training_only {
            for w in node.op.weights() {
                ours.push((format!("{}.{}", node.scope.as_deref().unwrap(), w.suffix), w.shape));
            }
        }
    }
    ours.sort();
    let mut theirs: Vec<(String, Vec<usize>)> =
        header.into_iter().filter(|(_, dtype, _)| dtype != "I64").map(|(k, _, s)| (k, s)).collect();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn sequential_models_use_nn_sequential_positions() {
    let keys = weight_keys(&compile(&model("alexnet")), false);
    for k in [
        "features.0",
        "features.3",
        "features.6",
        "features.8",
        "features.10",
        "classifier.1",
        "classifier.4",
        "classifier.6",
    ] {
        assert!(keys.contains(&format!("{k}.weight")) && keys.contains(&format!("{k}.bias")), "{k}");
    }
    assert_eq!(keys.len(), 16);
    let keys = weight_keys(&compile(&model("vgg16")), false);
    assert!(
        keys.contains(&"features.28.weight".to_string()) && keys.contains(&"classifier.6.bias".to_string())
    );
    let keys = weight_keys(&compile(&model("alexnet_paper")), false);
    for k in [
        "features.0",
        "features.4",
        "features.8",
        "features.10",
        "features.12",
        "classifier.1",
        "classifier.4",
        "classifier.6",
    ] {
        assert!(keys.contains(&format!("{k}.weight")), "{k}");
    }
}

#[test]
fn resnets_use_torchvision_block_and_projection_keys() {
    let keys = weight_keys(&compile(&model("resnet50")), false);
    for k in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.bias",
        "layer3.5.conv3.weight",
        "layer4.2.bn3.running_mean",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(keys.contains(&k.to_string()), "{k}");
    }
    assert!(!keys.contains(&"layer1.1.downsample.0.weight".to_string()));
    let keys = weight_keys(&compile(&model("resnet18")), false);
    assert!(!keys.iter().any(|k| k.starts_with("layer1.0.downsample")));
    assert!(keys.contains(&"layer2.0.downsample.0.weight".to_string()));
    let keys = weight_keys(&compile(&model("preact_resnet50")), false);
    for k in ["layer1.0.downsample.weight", "layer1.0.bn1.weight", "bn.weight", "fc.weight"] {
        assert!(keys.contains(&k.to_string()), "{k}");
    }
}

#[test]
fn resnet_stages_end_at_the_expected_resolutions() {
    let g = compile(&model("resnet50"));
    let shape = |n: &str| g.node(g.find(n).unwrap()).shape.clone();
    assert_eq!(shape("layer1.2.conv3"), Shape::chw(256, 56, 56));
    assert_eq!(shape("layer2.0.conv2"), Shape::chw(128, 28, 28));
    assert_eq!(shape("layer3.5.conv3"), Shape::chw(1024, 14, 14));
    assert_eq!(shape("layer4.2.conv3"), Shape::chw(2048, 7, 7));
}

#[test]
fn the_input_shape_can_be_overridden() {
    let options = netc_compiler::Options { input_shape: Some(vec![3, 320, 320]) };
    let g = netc_compiler::compile_file(&model("resnet50"), &options).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(g.node(g.find("layer4.2.conv3").unwrap()).shape, Shape::chw(2048, 10, 10));
    assert_eq!(g.shape(g.outputs[0].value), &Shape::vector(1000));
}

/// Golden text IR: `tests/golden/ir/<model>.parsed.txt`; `NETC_BLESS=1` rewrites.
fn check_golden_ir(name: &str) {
    let text = print::to_text(&compile(&model(name)));
    let path = root().join(format!("tests/golden/ir/{name}.parsed.txt"));
    if std::env::var_os("NETC_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == text,
        "text IR of {name} differs from {}; rerun with NETC_BLESS=1 and review",
        path.display()
    );
}

#[test]
fn resnet18_text_ir_is_stable() {
    check_golden_ir("resnet18");
}

#[test]
fn googlenet_text_ir_is_stable() {
    check_golden_ir("googlenet");
}

/// The keys and shapes of `g`'s weights against torchvision's, as
/// `tests/golden/pytorch/make_golden.py` wrote them from the torchvision model
/// (`tests/golden/pytorch/<name>.keys.txt`, one `key dims` line each).
fn assert_torchvision_keys_and_shapes(name: &str, g: &Graph) {
    let mut ours: Vec<String> = Vec::new();
    for id in g.node_ids() {
        let node = g.node(id);
        for w in node.op.weights() {
            let dims: Vec<String> = w.shape.iter().map(|d| d.to_string()).collect();
            ours.push(format!("{}.{} {}", node.scope.as_deref().unwrap(), w.suffix, dims.join("x")));
        }
    }
    ours.sort();
    let text = std::fs::read_to_string(root().join(format!("tests/golden/pytorch/{name}.keys.txt"))).unwrap();
    let mut theirs: Vec<String> = text.lines().map(str::to_string).collect();
    theirs.sort();
    assert_eq!(ours, theirs, "{name}");
}

/// MobileNetV2 (ReLU6, depthwise convolutions, inverted residuals), ShuffleNetV2 (chunk, channel
/// shuffle), EfficientNet-B0 (SiLU, squeeze-and-excitation) and MobileNetV3-Small (hardswish,
/// hardsigmoid), RegNetX-400MF (hyphens in its keys, spelt with quoted scope segments) and
/// DenseNet-121 (chained concatenations, `features.denseblock1.denselayer1.norm1.weight`):
/// torchvision's parameter counts and every `state_dict` key with its shape.
#[test]
fn modern_models_have_torchvisions_parameters_keys_and_shapes() {
    for (name, params) in [
        ("mobilenet_v2", 3_504_872),
        ("shufflenet_v2_x1_0", 2_278_604),
        ("efficientnet_b0", 5_288_548),
        ("mobilenet_v3_small", 2_542_856),
        ("regnet_x_400mf", 5_495_976),
        ("densenet121", 7_978_856),
    ] {
        let g = compile(&model(name));
        verify(&g).unwrap();
        assert_eq!(summarize(&g, false).total_params, params, "{name}");
        assert_torchvision_keys_and_shapes(name, &g);
        assert_eq!(g.shape(g.outputs[0].value), &Shape::vector(1000));
    }
}
