//! What the CLI prints: a closed pipe is a quiet success, each OS error is printed once, help
//! lists every choice, `run --format json` / `--labels`, and the note on `netc init`'s random
//! weights (which travels into bundles).

use crate::common::{model, netc, root};
use crate::common::{path_str as s, run_netc as run};
use std::path::{Path, PathBuf};
use std::process::Stdio;

fn ok(args: &[&str]) -> (String, String) {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "netc {args:?} failed:\n{err}");
    (out, err)
}

/// A 10-class classifier on 3x16x16 images and its `netc init` weights, in `dir`.
fn tiny(dir: &Path) -> (PathBuf, PathBuf) {
    let net = dir.join("tiny.net");
    std::fs::write(
        &net,
        "network tiny(image: [3, 16, 16]) {\n  image |> conv(4, 3, pad = 1) @conv |> relu |> global_avgpool |> flatten |> linear(10) @fc\n}\n",
    )
    .unwrap();
    let weights = dir.join("tiny.safetensors");
    ok(&["init", s(&net), "-o", s(&weights), "--seed", "9"]);
    (net, weights)
}

fn cat() -> PathBuf {
    root().join("models/sample/cat.jpg")
}

#[test]
fn a_reader_that_closes_the_pipe_early_is_a_quiet_success() {
    // The read end is closed before netc writes (it parses and optimises ResNet-50 first), so
    // its first write fails with EPIPE: netc must stop quietly, with status 0.
    for args in [
        vec!["ir".to_string(), s(&model("resnet50")).to_string()],
        vec!["summary".to_string(), s(&model("resnet152")).to_string()],
    ] {
        let mut child =
            netc().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("netc starts");
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "netc {args:?}: {err}");
        assert!(err.is_empty(), "netc {args:?} printed: {err}");
    }
}

#[test]
fn each_os_error_message_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let missing = dir.path().join("missing");
    let m = s(&missing);
    let image = s(&cat()).to_string();
    let nowhere = dir.path().join("no/dir/out.npy");
    for args in [
        vec!["check", m],
        vec!["summary", m],
        vec!["info", m],
        vec!["run", m, "--input", &image],
        vec!["run", s(&net), "--weights", m, "--input", &image],
        vec!["run", s(&net), "--weights", s(&weights), "--input", m],
        vec!["run", s(&net), "--weights", s(&weights), "--input", "missing.npy"],
        vec!["run", s(&net), "--weights", s(&weights), "--input", &image, "--labels", m],
        vec!["run", s(&net), "--weights", s(&weights), "--input", &image, "-o", s(&nowhere)],
        vec!["compile", s(&net), "--weights", m, "-o", "x.netc"],
        vec!["compile", s(&net), "--weights", s(&weights), "-o", s(&nowhere)],
        vec!["bench", m],
        vec!["ir", s(&net), "-o", s(&nowhere)],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(!err.contains("at path"), "names the temporary file rather than the output: {err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{args:?}:\n{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}:\n{err}");
    }
}

#[test]
fn library_errors_chain_each_os_message_once() {
    // A chain printer (anyhow's `{:#}`, or walking `source()`) must not repeat the OS error
    // that the message already holds.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.netc");
    let errors: Vec<anyhow::Error> = vec![
        netc::Model::load(&missing).err().unwrap().into(),
        netc::Model::from_net(model("resnet18"), &missing, &netc::Options::default()).err().unwrap().into(),
        netc_runtime::io::npy::read(&missing).err().unwrap().into(),
        netc_runtime::io::image::load(&missing, 8, 8).err().unwrap().into(),
    ];
    for e in errors {
        let chain = format!("{e:#}");
        assert_eq!(chain.matches("No such file or directory").count(), 1, "{chain}");
    }
}

#[test]
fn ir_help_lists_every_stage_and_format_one_per_line() {
    let (help, _) = ok(&["ir", "--help"]);
    for line in
        ["  parsed ", "  optimized ", "  after:PASS ", "  clif ", "  asm ", "  text ", "  dot ", "  json "]
    {
        assert!(help.lines().any(|l| l.starts_with(line)), "no line starting `{line}` in:\n{help}");
    }
    let (stage, _) = ok(&["ir", "--help"]);
    let stage_help = stage.lines().skip_while(|l| !l.contains("--stage <STAGE>")).nth(1).unwrap();
    assert!(stage_help.contains("clif") && stage_help.contains("asm"), "{stage_help}");
}

#[test]
fn run_prints_top_classes_as_json_one_object_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let image = cat();
    let (out, _) = ok(&[
        "run",
        s(&net),
        "--weights",
        s(&weights),
        "--input",
        s(&image),
        s(&image),
        "--format",
        "json",
        "--top",
        "3",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let images = json.as_array().unwrap();
    assert_eq!(images.len(), 2, "{out}");
    for entry in images {
        assert_eq!(entry["image"], s(&image));
        let top = entry["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let probs: Vec<f64> = top.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|p| p[0] >= p[1]) && probs.iter().all(|&p| p > 0.0 && p <= 1.0));
        assert!(top.iter().all(|t| t["class"].as_u64().unwrap() < 10 && t["label"].is_null()), "{out}");
    }
    // The text form stays the default; JSON without --top lists 5.
    let (text, _) = ok(&["run", s(&net), "--weights", s(&weights), "--input", s(&image)]);
    assert!(text.starts_with(&format!("{}:\n", image.display())), "{text}");
    let (out, _) = ok(&["run", s(&net), "--weights", s(&weights), "--input", s(&image), "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["top"].as_array().unwrap().len(), 5);
}

#[test]
fn imagenet_models_get_imagenet_labels_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("r18.safetensors");
    let net = model("resnet18");
    ok(&["init", s(&net), "-o", s(&weights)]);
    let (out, _) = ok(&[
        "run",
        s(&net),
        "--weights",
        s(&weights),
        "--input",
        s(&cat()),
        "--format",
        "json",
        "--top",
        "1000",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tabby = json[0]["top"].as_array().unwrap().iter().find(|t| t["class"] == 281).unwrap();
    assert_eq!(tabby["label"], "tabby");
}

#[test]
fn labels_name_the_classes_and_must_cover_them() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let labels = dir.path().join("labels.txt");
    let names: Vec<String> = (0..10).map(|i| format!("thing {i}")).collect();
    std::fs::write(&labels, names.join("\r\n") + "\r\n").unwrap();
    let base = ["run", s(&net), "--weights", s(&weights), "--input"];
    let image = cat();
    let with = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = base.iter().map(|a| a.to_string()).collect();
        args.push(s(&image).to_string());
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let args = with(&["--labels", s(&labels), "--top", "10"]);
    let (out, _) = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for line in out.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2..].join(" "), format!("thing {}", fields[1]), "{out}");
    }
    let args = with(&["--labels", s(&labels), "--format", "json"]);
    let (out, _) = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = &json[0]["top"][0];
    assert_eq!(first["label"], format!("thing {}", first["class"]));

    // Too few lines (and too many) are clear errors, before anything runs.
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "cat\ndog\nbird\n").unwrap();
    let args = with(&["--labels", s(&short)]);
    let (code, out, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.starts_with("error: ")
            && err.contains("short.txt")
            && err.contains("only 3 lines")
            && err.contains("10 classes"),
        "{err}"
    );
    std::fs::write(&short, names.join("\n") + "\nextra\n").unwrap();
    let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(code == 1 && err.contains("11 lines"), "{err}");
    std::fs::write(&short, b"\xff\xfe not text\n").unwrap();
    let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(code == 1 && err.contains("UTF-8") && !err.contains("panicked"), "{err}");
    // --labels without anything to label.
    let out_npy = dir.path().join("y.npy");
    let args = with(&["--labels", s(&labels), "-o", s(&out_npy)]);
    let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(code == 1 && err.contains("--top"), "{err}");
}

#[test]
fn init_weights_are_marked_random_and_runs_say_so_also_from_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let file = netc_runtime::WeightFile::open(&weights).unwrap();
    assert_eq!(file.metadata()["netc.init"], "random");
    assert_eq!(file.metadata()["netc.init.seed"], "9");
    let image = cat();

    let (_, err) = ok(&["run", s(&net), "--weights", s(&weights), "--input", s(&image)]);
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("note: ")).collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(notes[0].contains("random") && notes[0].contains("meaningless"), "{err}");

    let bundle = dir.path().join("tiny.netc");
    ok(&["compile", s(&net), "--weights", s(&weights), "-o", s(&bundle)]);
    let opened = netc_runtime::bundle::Bundle::open(&bundle).unwrap();
    assert_eq!(opened.weights_metadata()["netc.init"], "random");
    let (_, err) = ok(&["run", s(&bundle), "--input", s(&image)]);
    assert_eq!(err.lines().filter(|l| l.starts_with("note: ") && l.contains("random")).count(), 1, "{err}");

    // Weights without the mark (trained ones, or written by other tools) get no note.
    let graph = crate::common::compile(&net);
    let plain = dir.path().join("plain.safetensors");
    let tensors = netc_runtime::init::he_init(&graph, 9).unwrap();
    netc_runtime::weights::write_file(&plain, &tensors).unwrap();
    let (_, err) = ok(&["run", s(&net), "--weights", s(&plain), "--input", s(&image)]);
    assert!(!err.contains("note:"), "{err}");
}
