//! `netc init` and `netc run` as users call them: end to end on the sample image, and a clear
//! message with a non-zero exit for every bad input, never a panic.

use crate::common::{compile, model, root};
use crate::common::{path_str as s, run_netc as run};
use netc_runtime::io::{image, npy};
use netc_runtime::{reference, Tensor, WeightFile};
use std::path::{Path, PathBuf};

/// A small classifier with ImageNet's 1000 classes and a 3x32x32 input, and its He weights.
fn tiny(dir: &Path) -> (PathBuf, PathBuf) {
    let net = dir.join("tiny.net");
    std::fs::write(
        &net,
        "network tiny(image: [3, 32, 32]) {\n  image |> conv(8, 3, pad = 1) @conv |> batchnorm @bn |> relu\n        |> global_avgpool |> flatten |> linear(1000) @fc\n}\n",
    )
    .unwrap();
    let weights = dir.join("tiny.safetensors");
    let (code, _, err) = run(&["init", s(&net), "-o", s(&weights), "--seed", "5"]);
    assert_eq!(code, 0, "{err}");
    (net, weights)
}

/// Runs `netc run` and expects failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let (code, _, err) = run(args);
    assert_eq!(code, 1, "expected a clean failure, got exit {code}: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn init_then_run_classifies_the_sample_image() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("resnet18.safetensors");
    let logits = dir.path().join("logits.npy");
    let net = model("resnet18");
    let cat = root().join("models/sample/cat.jpg");

    let (code, out, err) = run(&["init", s(&net), "-o", s(&weights), "--seed", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("resnet18: wrote 122 tensors"), "{out}");

    let (code, out, err) = run(&[
        "run",
        s(&net),
        "--weights",
        s(&weights),
        "--input",
        s(&cat),
        "--top",
        "5",
        "--output",
        s(&logits),
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], format!("{}:", cat.display()));
    let probs: Vec<f64> =
        lines[1..].iter().map(|l| l.split_whitespace().next().unwrap().parse().unwrap()).collect();
    assert!(probs.windows(2).all(|p| p[0] >= p[1]) && probs.iter().sum::<f64>() <= 1.0001, "{out}");

    // The logits file holds what the reference interpreter computes for the model as written, the same
    // weights and image, up to rounding (the CLI runs the optimised graph with the JIT backend).
    let saved = npy::read(&logits).unwrap();
    assert_eq!(saved.shape, vec![1, 1000]);
    let graph = compile(&net);
    let file = WeightFile::open(&weights).unwrap();
    let bound = file.bind(&graph).unwrap();
    let input = image::load(&cat, 224, 224).unwrap();
    let expected = reference::run(&graph, &bound, &[input]).unwrap().remove(0);
    crate::common::assert_close("netc run logits", &saved, &expected);
    // The top-1 line names the arg-max class.
    let best = (0..1000).fold(0, |b, i| if saved.data[i] > saved.data[b] { i } else { b });
    let name = netc_runtime::classes::imagenet()[best];
    assert!(lines[1].ends_with(&format!("{best:>4}  {name}")), "{}", lines[1]);
}

#[test]
fn init_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (net, first) = tiny(dir.path());
    let again = dir.path().join("again.safetensors");
    let other = dir.path().join("other.safetensors");
    assert_eq!(run(&["init", s(&net), "-o", s(&again), "--seed", "5"]).0, 0);
    assert_eq!(run(&["init", s(&net), "-o", s(&other), "--seed", "6"]).0, 0);
    assert_eq!(std::fs::read(&first).unwrap(), std::fs::read(&again).unwrap());
    assert_ne!(std::fs::read(&first).unwrap(), std::fs::read(&other).unwrap());
}

#[test]
fn npy_inputs_and_images_form_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let batch = dir.path().join("two.npy");
    let one = dir.path().join("one.npy");
    npy::write(&batch, &Tensor::new(vec![2, 3, 32, 32], vec![0.5; 2 * 3 * 32 * 32]).unwrap()).unwrap();
    npy::write(&one, &Tensor::new(vec![3, 32, 32], vec![-0.5; 3 * 32 * 32]).unwrap()).unwrap();
    let cat = root().join("models/sample/cat.jpg");
    let logits = dir.path().join("out.npy");
    let (code, out, err) = run(&[
        "run",
        s(&net),
        "--weights",
        s(&weights),
        "--input",
        s(&batch),
        s(&one),
        s(&cat),
        "--output",
        s(&logits),
        "--top",
        "2",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(npy::read(&logits).unwrap().shape, vec![4, 1000]);
    let headers: Vec<&str> = out.lines().filter(|l| l.ends_with(':')).collect();
    let expected = [
        format!("{}[0]:", batch.display()),
        format!("{}[1]:", batch.display()),
        format!("{}:", one.display()),
        format!("{}:", cat.display()),
    ];
    assert_eq!(headers, expected);
    // Without --output and --top, the top 5 are printed.
    let (code, out, _) = run(&["run", s(&net), "--weights", s(&weights), "--input", s(&one)]);
    assert_eq!((code, out.lines().count()), (0, 6), "{out}");
}

#[test]
fn inputs_of_the_wrong_rank_or_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let rank2 = dir.path().join("rank2.npy");
    npy::write(&rank2, &Tensor::new(vec![3, 1024], vec![0.0; 3 * 1024]).unwrap()).unwrap();
    let err = fails(&["run", s(&net), "--weights", s(&weights), "--input", s(&rank2)]);
    assert!(
        err.contains(&format!(
            "{}: expected an array of shape [N, C, H, W] or [C, H, W], got [3, 1024]",
            rank2.display()
        )),
        "{err}"
    );

    let size = dir.path().join("size.npy");
    npy::write(&size, &Tensor::new(vec![1, 3, 28, 28], vec![0.0; 3 * 28 * 28]).unwrap()).unwrap();
    let err = fails(&["run", s(&net), "--weights", s(&weights), "--input", s(&size)]);
    assert!(
        err.contains(&format!(
            "{}: a sample of shape [3, 28, 28] does not fit model `tiny`, whose input `image` is [3, 32, 32]",
            size.display()
        )),
        "{err}"
    );

    let ints = dir.path().join("ints.npy");
    let mut bytes = npy::to_bytes(&Tensor::new(vec![3, 32, 32], vec![0.0; 3 * 32 * 32]).unwrap());
    let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
    bytes[at + 1] = b'i';
    std::fs::write(&ints, bytes).unwrap();
    let err = fails(&["run", s(&net), "--weights", s(&weights), "--input", s(&ints)]);
    assert!(err.contains("ints.npy: the array has dtype `<i4`; netc reads float32 arrays"), "{err}");
}

#[test]
fn a_file_that_is_not_an_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "just some text, not a picture\n").unwrap();
    let err = fails(&["run", s(&net), "--weights", s(&weights), "--input", s(&text)]);
    assert!(err.contains(&format!("{}: not a JPEG or PNG image", text.display())), "{err}");

    // A JPEG cut short: recognised by its signature, refused as truncated.
    let cut = dir.path().join("cut.jpg");
    let jpeg = std::fs::read(root().join("models/sample/cat.jpg")).unwrap();
    std::fs::write(&cut, &jpeg[..600]).unwrap();
    let err = fails(&["run", s(&net), "--weights", s(&weights), "--input", s(&cut)]);
    assert!(
        err.contains(&format!("{}: the JPEG data ends before its end-of-image marker", cut.display())),
        "{err}"
    );

    let err = fails(&["run", s(&net), "--weights", s(&weights), "--input", "/nonexistent/cat.png"]);
    assert!(err.contains("/nonexistent/cat.png"), "{err}");
}

#[test]
fn an_unwritable_output_path_fails_before_running_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let cat = root().join("models/sample/cat.jpg");
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let before = listing();

    let missing = dir.path().join("no/such/dir/logits.npy");
    let err = fails(&["run", s(&net), "--weights", s(&weights), "--input", s(&cat), "--output", s(&missing)]);
    assert!(err.contains(&format!("cannot write {}", missing.display())), "{err}");

    let a_dir = dir.path().join("adir");
    std::fs::create_dir(&a_dir).unwrap();
    let err = fails(&["run", s(&net), "--weights", s(&weights), "--input", s(&cat), "--output", s(&a_dir)]);
    assert!(err.contains(&format!("cannot write {}: it is a directory", a_dir.display())), "{err}");

    let under_file = weights.join("logits.npy");
    let err =
        fails(&["run", s(&net), "--weights", s(&weights), "--input", s(&cat), "--output", s(&under_file)]);
    assert!(err.contains(&format!("cannot write {}", under_file.display())), "{err}");

    let err = fails(&["init", s(&net), "-o", s(&missing)]);
    assert!(err.contains(&format!("cannot write {}", missing.display())), "{err}");

    let mut after = listing();
    after.retain(|n| n != "adir");
    assert_eq!(after, before, "no partial or temporary file is left");
    assert_eq!(std::fs::read_dir(&a_dir).unwrap().count(), 0);
}

#[test]
fn weights_that_do_not_fit_or_are_corrupt_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (net, _) = tiny(dir.path());
    let cat = root().join("models/sample/cat.jpg");
    let resnet = dir.path().join("resnet18.safetensors");
    let (code, _, err) = run(&["init", s(&model("resnet18")), "-o", s(&resnet)]);
    assert_eq!(code, 0, "{err}");
    let err = fails(&["run", s(&net), "--weights", s(&resnet), "--input", s(&cat)]);
    assert!(
        err.contains(&format!("{}: the weights do not fit model `tiny` (6 missing, ", resnet.display())),
        "{err}"
    );
    assert!(err.contains("missing     conv.weight: expected [8, 3, 3, 3]"), "{err}");
    assert!(err.contains("mis-shaped  fc.weight: expected [1000, 8], found [1000, 512]"), "{err}");
    assert!(err.contains("unexpected  layer4.1.conv2.weight: F32 [512, 512, 3, 3]"), "{err}");

    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&resnet).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(&["run", s(&model("resnet18")), "--weights", s(&truncated), "--input", s(&cat)]);
    assert!(
        err.contains(&format!("{}: tensor `", truncated.display())) && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (code, _, err) = run(&[
        "run",
        s(&model("resnet18")),
        "--weights",
        "w.safetensors",
        "--input",
        "x.npy",
        "--threads",
        "0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`0` is not a thread count from 1 to 1024"), "{err}");
    let (code, _, err) = run(&["run", s(&model("resnet18")), "--weights", "w.safetensors"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--input"), "{err}");
}
