//! `netc export`: exported ONNX files pass `onnx.checker` and ONNX Runtime computes on them what
//! netc's reference interpreter computes on the `.net` model (`tests/onnx/check_export.py`), for
//! the model as written and the optimised graph.
//!
//! The check needs Python with `onnx` and `onnxruntime` (`NETC_PYTHON`, default `python3`); `.ci/run`
//! installs them and sets `NETC_REQUIRE_ONNX=1`, which turns their absence into a failure. Without
//! it the test says what it skips.

use crate::common::{compile, model, netc, root};
use std::path::Path;
use std::process::Command;

fn python() -> String {
    std::env::var("NETC_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether the ONNX checks can run; panics when CI requires them and they cannot.
fn onnx_runtime_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("NETC_REQUIRE_ONNX").is_none(),
            "NETC_REQUIRE_ONNX is set but `{} -c 'import onnx, onnxruntime, numpy'` fails",
            python()
        );
        eprintln!("SKIPPED: ONNX export checks ({} cannot import onnx, onnxruntime and numpy)", python());
    }
    ok
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exports `name` (random weights from `netc init`) as written and optimised, and checks both
/// against the reference interpreter on a batch of two random images.
fn check_model(name: &str, dir: &Path) {
    check_net(name, &model(name), dir);
}

/// [`check_model`] for the `.net` file `net`.
fn check_net(name: &str, net: &Path, dir: &Path) {
    let net = net.to_path_buf();
    let weights = dir.join(format!("{name}.safetensors"));
    run_ok(netc().arg("init").arg(&net).arg("-o").arg(&weights).args(["--seed", "3"]), "netc init");
    let graph = compile(&net);
    let shape = &graph.shape(graph.inputs[0]).0;
    let input = dir.join(format!("{name}.x.npy"));
    run_ok(
        Command::new(python()).args([
            "-c",
            &format!(
                "import numpy as np; np.save({:?}, np.random.RandomState(1).rand(2, {}).astype(np.float32))",
                input.display().to_string(),
                shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            ),
        ]),
        "writing the input",
    );
    let expected = dir.join(format!("{name}.reference.npy"));
    run_ok(
        netc()
            .arg("run")
            .arg(&net)
            .arg("--weights")
            .arg(&weights)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&expected)
            .args(["--backend", "reference"]),
        "netc run --backend reference",
    );
    let (written, optimized) = (dir.join(format!("{name}.onnx")), dir.join(format!("{name}.opt.onnx")));
    run_ok(
        netc().arg("export").arg(&net).arg("--weights").arg(&weights).arg("--onnx").arg(&written),
        "netc export",
    );
    run_ok(
        netc()
            .arg("export")
            .arg(&net)
            .arg("--weights")
            .arg(&weights)
            .arg("--onnx")
            .arg(&optimized)
            .arg("--optimized"),
        "netc export --optimized",
    );
    let script = root().join("tests/onnx/check_export.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&input)
        .arg(&expected)
        .arg(&written)
        .arg(&optimized)
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprint!("{report}");
    assert!(out.status.success(), "{name}: ONNX Runtime disagrees with the reference interpreter:\n{report}");
}

/// ResNet-18 (residual adds, BatchNorm, projection shortcuts), GoogLeNet (concatenation, ceil-mode
/// pooling, dropout, auxiliary heads left out), AlexNet as in the paper (LRN) and pre-activation
/// ResNet-50 (BatchNorm before the convolutions: a fused prologue in the optimised graph).
#[test]
fn exported_seed_models_run_under_onnx_runtime_as_netc_computes_them() {
    if !onnx_runtime_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["resnet18", "googlenet", "alexnet_paper", "preact_resnet50"] {
        check_model(name, dir.path());
    }
}

/// The ops of issue 14: activations (Clip, with one bound or two, Sigmoid, HardSigmoid, HardSwish, SiLU as x * Sigmoid),
/// the squeeze-and-excitation product (a broadcasting Mul), chunk (Slice) and channel shuffle
/// (Reshape, Transpose, Reshape); activations fused into convolutions (`--optimized`: separate
/// nodes after the conv's chain); a channel scale fused into a 1x1 convolution; and MobileNetV2.
#[test]
fn exported_activations_products_chunks_and_shuffles_run_under_onnx_runtime() {
    if !onnx_runtime_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("ops.net");
    std::fs::write(
        &net,
        "network ops(x: [8, 10, 10]) {
           y = x |> conv(16, 3, pad = 1) @stem |> batchnorm @bn |> hardswish
           s = y |> global_avgpool |> conv(4, 1) @fc1 |> silu |> conv(16, 1) @fc2 |> hardsigmoid
           (a, b) = chunk(y * s, 2)
           z = concat(a |> relu6, b |> conv(8, 1) @branch |> sigmoid |> clamp(-0.5, 0.75)) |> channel_shuffle(4)
           z |> hardtanh |> clamp(min = -0.25) |> clamp(max = 0.5) |> global_avgpool |> flatten |> linear(10) @fc
         }",
    )
    .unwrap();
    check_net("ops", &net, dir.path());
    // Activations fused after a residual sum and its ReLU (exported as ReLU then Sigmoid after the
    // Add), and after a 1x1 GEMM.
    let fused = dir.path().join("fused.net");
    std::fs::write(
        &fused,
        "network fused(x: [8, 6, 6]) {
           y = x |> conv(8, 3, pad = 1) @c |> batchnorm @bn
           sigmoid(relu(y + x)) |> conv(8, 1) @d |> silu
         }",
    )
    .unwrap();
    check_net("fused", &fused, dir.path());
    // Squeeze-and-excitation's product fused into the 1x1 projection after it (`--optimized`: a Mul
    // before the Conv).
    let scaled = dir.path().join("scaled.net");
    std::fs::write(
        &scaled,
        "network scaled(x: [8, 6, 6]) {
           s = x |> global_avgpool |> conv(2, 1) @f1 |> silu |> conv(8, 1) @f2 |> sigmoid
           x * s |> conv(4, 1) @p |> relu
         }",
    )
    .unwrap();
    check_net("scaled", &scaled, dir.path());
    check_model("mobilenet_v2", dir.path());
}

#[test]
fn export_names_weights_by_their_torchvision_keys_and_leaves_out_training_only_parts() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("g.safetensors");
    run_ok(netc().arg("init").arg(model("googlenet")).arg("-o").arg(&weights), "netc init");
    let onnx = dir.path().join("g.onnx");
    run_ok(
        netc().arg("export").arg(model("googlenet")).arg("--weights").arg(&weights).arg("--onnx").arg(&onnx),
        "export",
    );
    let bytes = std::fs::read(&onnx).unwrap();
    let contains = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(contains("inception3a.branch1.conv.weight"), "a torchvision key is an initializer name");
    assert!(!contains("aux1.conv.conv.weight"), "the auxiliary classifier is training-only");
}

#[test]
fn export_of_a_bundle_or_without_weights_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = netc()
        .arg("export")
        .arg(model("resnet18"))
        .arg("--onnx")
        .arg(dir.path().join("x.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--weights"));
    assert!(!dir.path().join("x.onnx").exists(), "nothing is written on failure");
}
