//! The front-end CLI contract (`netc check`, `netc summary`, `netc ir`) that users' scripts rely on.

use crate::common::model;
use crate::common::run_netc as run;

#[test]
fn check_exits_zero_and_prints_nothing_for_a_valid_model() {
    let (code, out, err) = run(&["check", model("resnet50").to_str().unwrap()]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}

#[test]
fn check_prints_the_diagnostic_and_fails_for_an_invalid_model() {
    let (code, _, err) = run(&["check", "tests/diagnostics/add_mismatch.net"]);
    assert_ne!(code, 0);
    assert!(err.starts_with("error[shape]: cannot add values of shapes"), "{err}");
    assert!(err.contains("tests/diagnostics/add_mismatch.net:4:8"), "{err}");
    assert!(err.contains("^^^^^"), "{err}");
}

#[test]
fn check_reports_a_missing_file() {
    let (code, _, err) = run(&["check", "no/such/model.net"]);
    assert_ne!(code, 0);
    assert!(err.contains("no/such/model.net"), "{err}");
}

#[test]
fn summary_json_has_the_documented_fields() {
    let (code, out, _) = run(&["summary", model("googlenet").to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["model"], "googlenet");
    assert_eq!(v["input"], serde_json::json!([3, 224, 224]));
    assert_eq!(v["total_params"], 6_624_904);
    assert_eq!(v["total_macs"], 1_498_376_192u64);
    let first = &v["layers"][0];
    for field in ["name", "op", "output_shape", "params", "macs"] {
        assert!(first.get(field).is_some(), "{field}");
    }
    assert_eq!(first["name"], "conv1.conv");
    assert_eq!(first["output_shape"], serde_json::json!([64, 112, 112]));
}

#[test]
fn summary_with_train_includes_the_auxiliary_heads() {
    let (_, out, _) = run(&["summary", model("googlenet").to_str().unwrap(), "--train", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total_params"], 13_004_888);
}

#[test]
fn summary_table_ends_with_totals() {
    let (code, out, _) = run(&["summary", model("resnet18").to_str().unwrap()]);
    assert_eq!(code, 0);
    let last = out.lines().rev().nth(1).unwrap();
    assert!(
        last.starts_with("total") && last.contains("11,689,512") && last.contains("1,814,073,344"),
        "{last}"
    );
}

/// The model writes `global_avgpool`; the summary says so (it is `adaptive_avgpool(1)` inside).
#[test]
fn summary_names_global_pooling_as_written() {
    let (code, out, _) = run(&["summary", model("resnet18").to_str().unwrap()]);
    assert_eq!(code, 0);
    let row = out.lines().find(|l| l.contains("avgpool")).expect("a pooling row");
    assert!(row.starts_with("global_avgpool") && row.matches("global_avgpool").count() == 2, "{row}");
    assert!(!out.contains("adaptive_avgpool"), "{out}");
}

#[test]
fn summary_accepts_an_input_override_and_rejects_a_malformed_one() {
    let (code, out, _) =
        run(&["summary", model("resnet18").to_str().unwrap(), "--input", "3x112x112", "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["input"], serde_json::json!([3, 112, 112]));
    let (code, _, err) = run(&["summary", model("resnet18").to_str().unwrap(), "--input", "3xbig"]);
    assert_ne!(code, 0);
    assert!(err.contains("3xbig"), "{err}");
}

#[test]
fn ir_json_lists_nodes_with_lowercase_ops() {
    let (code, out, _) = run(&["ir", model("resnet18").to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["inputs"], serde_json::json!([0]));
    let nodes = v["nodes"].as_array().unwrap();
    let ops: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops.into_iter().collect::<Vec<_>>(),
        ["adaptive_avgpool", "add", "batchnorm", "conv", "flatten", "input", "linear", "maxpool", "relu"]
    );
    for n in nodes {
        for field in ["id", "name", "op", "inputs", "shape", "attrs"] {
            assert!(n.get(field).is_some(), "{field} in {n}");
        }
    }
    assert_eq!(v["outputs"], serde_json::json!([nodes.len() - 1]));
    let conv1 = nodes.iter().find(|n| n["name"] == "conv1").unwrap();
    assert_eq!(conv1["attrs"]["kernel"], serde_json::json!([7, 7]));
}

#[test]
fn ir_dot_has_a_cluster_per_block_instance_and_shapes_on_edges() {
    let (code, out, _) = run(&["ir", model("resnet18").to_str().unwrap(), "--format", "dot"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("digraph \"resnet18\""));
    assert_eq!(out.matches("label=\"basic_block @layer").count(), 8);
    assert!(out.contains("[label=\"[64, 56, 56]\"]"));
}

#[test]
fn ir_can_write_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r18.txt");
    let (code, out, _) = run(&["ir", model("resnet18").to_str().unwrap(), "-o", path.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, ""));
    assert!(std::fs::read_to_string(path).unwrap().starts_with("network resnet18(image: [3, 224, 224])"));
}

#[test]
fn bad_arguments_fail_with_usage() {
    let (code, _, err) = run(&["summary"]);
    assert_ne!(code, 0);
    assert!(err.contains("Usage"), "{err}");
    let (code, _, _) = run(&["ir", model("resnet18").to_str().unwrap(), "--format", "svg"]);
    assert_ne!(code, 0);
}
