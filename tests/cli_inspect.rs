//! Looking inside compiled bundles from the command line (`netc info`, `netc summary M.netc`,
//! `netc ir M.netc`) and `netc summary --depth`.

use crate::common::model;
use crate::common::{path_str as s, run_netc as run};
use std::path::{Path, PathBuf};

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "netc {args:?} failed:\n{err}");
    out
}

/// Expects a clean failure (exit 1, one `error:` message, no panic); returns stderr.
fn fails(args: &[&str]) -> String {
    let (code, _, err) = run(args);
    assert_eq!(code, 1, "netc {args:?}: expected exit 1, got {code}:\n{err}");
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    err
}

/// A small classifier (conv, BatchNorm, pool, linear to 10 classes), its `netc init` weights and
/// its bundle, in `dir`.
fn tiny_bundle(dir: &Path) -> PathBuf {
    let net = dir.join("tiny.net");
    std::fs::write(
        &net,
        "network tiny(image: [3, 16, 16]) {\n  image |> conv(8, 3, pad = 1) @conv |> batchnorm @bn |> relu\n        |> global_avgpool |> flatten |> linear(10) @fc\n}\n",
    )
    .unwrap();
    let weights = dir.join("tiny.safetensors");
    let bundle = dir.join("tiny.netc");
    ok(&["init", s(&net), "-o", s(&weights), "--seed", "4"]);
    ok(&["compile", s(&net), "--weights", s(&weights), "-o", s(&bundle)]);
    bundle
}

#[test]
fn info_describes_a_bundle_and_verifies_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    let out = ok(&["info", s(&bundle)]);
    assert!(out.starts_with(&format!("{}: netc bundle of model `tiny`\n", bundle.display())), "{out}");
    for line in [
        "format version  2\n",
        "checksum        ok (CRC-32 0x",
        "weights         624 floats in 2 buffers, random (from `netc init`)",
        "graph           5 nodes, 3 kernels\n",
        "activations     ",
    ] {
        assert!(out.contains(line), "`{line}` missing from:\n{out}");
    }
    // Every ISA this machine runs was proved by `netc compile`, and the packing host is named.
    let host: Vec<&str> = netc_compiler::codegen::Isa::available().iter().map(|i| i.name()).collect();
    assert!(out.contains(&format!("bounds proved   {}\n", host.join(", "))), "{out}");
    let best = netc_compiler::codegen::Isa::best().unwrap();
    assert!(out.contains(&format!("packed on       {best} (register tile ")), "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["info", s(&bundle), "--format", "json"])).unwrap();
    assert_eq!(json["model"], "tiny");
    assert_eq!(json["checksum"]["ok"], true);
    assert_eq!(json["nodes"], 5);
    assert_eq!(json["kernels"], 3);
    assert_eq!(json["weights"]["floats"], 624);
    assert_eq!(json["weights_metadata"]["netc.init"], "random");
    assert_eq!(json["weights_metadata"]["netc.init.seed"], "4");
    assert_eq!(json["file_bytes"], std::fs::metadata(&bundle).unwrap().len());
}

#[test]
fn info_says_corrupt_for_a_flipped_byte_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x10;
    // Named without the extension: a bundle is recognised by its magic bytes.
    let damaged = dir.path().join("damaged.bin");
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, out, err) = run(&["info", s(&damaged)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("checksum        CORRUPT: stored 0x"), "{out}");
    assert!(
        out.contains("netc bundle of model `tiny`"),
        "the header and manifest are still described:\n{out}"
    );
    assert!(err.starts_with("error: ") && err.contains("corrupted"), "{err}");

    std::fs::write(&damaged, &bytes[..bytes.len() - 64]).unwrap();
    let (code, out, _) = run(&["info", s(&damaged)]);
    assert_eq!(code, 1);
    assert!(out.contains("TRUNCATED"), "{out}");
}

#[test]
fn info_refuses_what_is_not_a_bundle() {
    let err = fails(&["info", s(&model("resnet18"))]);
    assert!(err.contains("not a compiled bundle"), "{err}");
    let err = fails(&["info", "no/such/file.netc"]);
    assert!(err.contains("no/such/file.netc") && err.contains("No such file"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&["info", s(dir.path())]);
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn summary_and_ir_read_the_optimised_graph_a_bundle_stores() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    // Named without the extension too: recognised by content, never read as .net text.
    let renamed = dir.path().join("model.bin");
    std::fs::copy(&bundle, &renamed).unwrap();
    for file in [&bundle, &renamed] {
        let out = ok(&["summary", s(file)]);
        assert!(
            out.starts_with("tiny (input [3, 16, 16]; the optimised graph stored in the bundle"),
            "{out}"
        );
        assert!(out.contains("conv+bias+relu") && !out.contains("batchnorm"), "BatchNorm is folded:\n{out}");
        let json: serde_json::Value =
            serde_json::from_str(&ok(&["summary", s(file), "--format", "json"])).unwrap();
        assert_eq!(json["graph"], "optimized");
        // Folded: conv weight + bias, linear weight + bias.
        assert_eq!(json["total_params"], 8 * 27 + 8 + 8 * 10 + 10);

        let ir = ok(&["ir", s(file)]);
        assert!(ir.starts_with("network tiny(image: [3, 16, 16])"), "{ir}");
        assert!(ir.contains("conv+bias+relu("), "{ir}");
        assert_eq!(ok(&["ir", s(file), "--stage", "optimized"]), ir);
        let json: serde_json::Value =
            serde_json::from_str(&ok(&["ir", s(file), "--format", "json"])).unwrap();
        assert_eq!(json["nodes"].as_array().unwrap().len(), 5);
        assert!(ok(&["ir", s(file), "--format", "dot"]).starts_with("digraph"));
        let clif = ok(&["ir", s(file), "--stage", "clif"]);
        assert_eq!(clif.matches("; ---- kernel ").count(), 3, "{clif}");
    }
}

#[test]
fn bundle_inspection_refuses_options_that_need_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    let b = s(&bundle);
    for (args, expect) in [
        (vec!["ir", b, "--stage", "parsed"], "stores the optimised graph only"),
        (vec!["ir", b, "--stage", "after:fold-batchnorm"], "stores the optimised graph only"),
        (vec!["ir", b, "-O0"], "takes no optimiser options"),
        (vec!["summary", b, "--train"], "--train needs the .net source"),
        (vec!["summary", b, "--input", "3x32x32"], "input shape is fixed"),
        (vec!["summary", b, "--disable-pass", "winograd"], "takes no optimiser options"),
    ] {
        let err = fails(&args);
        assert!(
            err.contains(expect) && err.contains("tiny.netc"),
            "{args:?}: expected `{expect}` in:\n{err}"
        );
    }
    // A damaged bundle is refused with the bundle's own error, not a UTF-8 complaint.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    for command in ["summary", "ir"] {
        let err = fails(&[command, b]);
        assert!(err.contains("checksum") && !err.contains("UTF-8"), "{err}");
    }
}

#[test]
fn check_verifies_a_bundle_and_commands_that_need_the_source_refuse_one() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(dir.path());
    let renamed = dir.path().join("model.net");
    std::fs::copy(&bundle, &renamed).unwrap();
    assert_eq!(ok(&["check", s(&bundle)]), "");
    assert_eq!(ok(&["check", s(&renamed)]), "", "recognised by content, whatever its name");
    let err = fails(&["init", s(&renamed), "-o", s(&dir.path().join("w.safetensors"))]);
    assert!(err.contains("a compiled bundle, not a .net source") && !err.contains("UTF-8"), "{err}");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&bundle, &bytes).unwrap();
    let err = fails(&["check", s(&bundle)]);
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn summary_depth_adds_up_each_block_instance() {
    let net = model("resnet18");
    let full: serde_json::Value =
        serde_json::from_str(&ok(&["summary", s(&net), "--format", "json"])).unwrap();
    let depth1: serde_json::Value =
        serde_json::from_str(&ok(&["summary", s(&net), "--format", "json", "--depth", "1"])).unwrap();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap().to_string()).collect()
    };
    let top_level = names(&depth1);
    assert!(top_level.iter().all(|n| !n.contains('.')), "{top_level:?}");
    assert_eq!(top_level[..8], ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]);
    assert_eq!(top_level.last().unwrap(), "fc");
    assert_eq!(depth1["total_params"], full["total_params"]);
    assert_eq!(depth1["depth"], 1);
    assert_eq!(depth1["total_macs"], full["total_macs"]);
    // Each group holds the sum of its layers and the output shape of its last one.
    let sum = |prefix: &str, what: &str| -> u64 {
        full["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["name"].as_str().unwrap().starts_with(prefix))
            .map(|l| l[what].as_u64().unwrap())
            .sum()
    };
    let layer3 = &depth1["layers"][6];
    assert_eq!(layer3["params"], sum("layer3.", "params"));
    assert_eq!(layer3["macs"], sum("layer3.", "macs"));
    assert_eq!(layer3["output_shape"], serde_json::json!([256, 14, 14]));
    assert_eq!(layer3["op"], "16 layers");

    let depth2 = ok(&["summary", s(&net), "--depth", "2"]);
    // A tree: each block's row, then its instances' rows indented under it.
    let layer1 = depth2.lines().position(|l| l.starts_with("layer1 ")).expect(&depth2);
    let lines: Vec<&str> = depth2.lines().collect();
    assert!(
        lines[layer1 + 1].starts_with("  layer1.0 ") && lines[layer1 + 2].starts_with("  layer1.1 "),
        "{depth2}"
    );
    assert!(lines[layer1 + 3].starts_with("layer2 "), "{depth2}");
    assert!(depth2.lines().any(|l| l.starts_with("total") && l.contains("11,689,512")), "{depth2}");
    let (code, _, err) = run(&["summary", s(&net), "--depth", "0"]);
    assert!(code == 2 && err.starts_with("error: invalid value '0' for '--depth <N>'"), "{code}: {err}");
}
