//! Hostile and malformed inputs: every one is refused with a clear, file-naming error and a
//! non-zero exit, in bounded time and memory. Each test is the regression test of one class.

use crate::common::path_str as s;
use crate::common::{netc, root};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs `netc args...` and returns (exit code, stderr); a run that has not ended after `limit` is
/// killed and fails the test (a loader that blocks on a FIFO or reads a device forever).
fn run_bounded(args: &[&str], limit: Duration) -> (i32, String) {
    let mut child =
        netc().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("netc runs");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read as _;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("`netc {}` still running after {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fails_with(args: &[&str], expected: &str) {
    let (code, err) = run_bounded(args, Duration::from_secs(60));
    assert_ne!(code, 0, "`netc {}` succeeded", args.join(" "));
    assert!(err.contains(expected), "`netc {}`: expected `{expected}` in:\n{err}", args.join(" "));
    assert!(!err.contains("panicked"), "{err}");
}

/// A small model, its He weights and its bundle.
fn tiny(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let net = dir.join("tiny.net");
    std::fs::write(
        &net,
        "network tiny(image: [3, 16, 16]) {\n  image |> conv(4, 3, pad = 1) @conv |> batchnorm @bn |> relu\n        |> global_avgpool |> flatten |> linear(10) @fc\n}\n",
    )
    .unwrap();
    let weights = dir.join("tiny.safetensors");
    let bundle = dir.join("tiny.netc");
    assert!(netc().args(["init", s(&net), "-o", s(&weights)]).status().unwrap().success());
    assert!(netc()
        .args(["compile", s(&net), "--weights", s(&weights), "-o", s(&bundle)])
        .status()
        .unwrap()
        .success());
    (net, weights, bundle)
}

#[cfg(unix)]
fn fifo(dir: &Path) -> PathBuf {
    let path = dir.join("pipe");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system entry.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    path
}

#[cfg(unix)]
#[test]
fn fifos_and_devices_are_refused_by_every_loader_instead_of_blocking_or_reading_forever() {
    let dir = tempfile::tempdir().unwrap();
    let (net, _, bundle) = tiny(dir.path());
    let pipe = fifo(dir.path());
    let p = s(&pipe);
    fails_with(&["check", p], "a FIFO (named pipe), not a regular file");
    fails_with(&["run", p, "--input", "x.npy"], "a FIFO (named pipe), not a regular file");
    fails_with(
        &["run", s(&net), "--weights", p, "--input", "x.npy"],
        "a FIFO (named pipe), not a regular file",
    );
    fails_with(&["run", s(&bundle), "--input", p], "a FIFO (named pipe), not a regular file");
    fails_with(&["check", "/dev/zero"], "a character device, not a regular file");
    fails_with(&["run", s(&bundle), "--input", "/dev/zero"], "a character device, not a regular file");
    fails_with(&["run", s(&net), "--weights", "/dev/zero", "--input", "x.npy"], "a character device");
    // The commands that look inside models and bundles, and --labels.
    for command in ["info", "summary", "ir"] {
        fails_with(&[command, p], "a FIFO (named pipe), not a regular file");
        fails_with(&[command, "/dev/zero"], "a character device, not a regular file");
    }
    fails_with(
        &["run", s(&bundle), "--input", "x.npy", "--labels", p],
        "a FIFO (named pipe), not a regular file",
    );
    // A `use` of a FIFO, from inside a model.
    let user = dir.path().join("user.net");
    std::fs::write(&user, format!("use \"{p}\"\nnetwork u(x: [3, 4, 4]) {{ x |> relu }}\n")).unwrap();
    fails_with(&["check", s(&user)], "a FIFO (named pipe), not a regular file");
    // A FIFO in a folder streamed by `run --format jsonl` is skipped (exit 3), never opened.
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::rename(fifo(&folder), folder.join("pipe.png")).unwrap();
    let sample = netc_runtime::Tensor::new(vec![3, 16, 16], vec![0.5; 3 * 16 * 16]).unwrap();
    netc_runtime::io::npy::write(&folder.join("x.npy"), &sample).unwrap();
    let args = ["run", s(&bundle), "--input", s(&folder), "--format", "jsonl"];
    let (code, err) = run_bounded(&args, Duration::from_secs(60));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("pipe.png: it is a FIFO (named pipe), not a regular file"), "{err}");
}

#[test]
fn a_damaged_or_foreign_file_named_netc_is_diagnosed_as_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("model.netc");
    std::fs::write(&junk, b"\x89PNG\r\n\x1a\n not a bundle at all, but long enough to have a header")
        .unwrap();
    fails_with(&["run", s(&junk), "--input", "x.npy"], &format!("{}: not a netc bundle", s(&junk)));
    // By content, not extension: a bundle under another name still runs.
    let (_, _, bundle) = tiny(dir.path());
    let renamed = dir.path().join("renamed.bin");
    std::fs::copy(&bundle, &renamed).unwrap();
    let input = dir.path().join("x.npy");
    netc_runtime::io::npy::write(&input, &netc_runtime::Tensor::zeros(vec![1, 3, 16, 16])).unwrap();
    let (code, err) = run_bounded(&["run", s(&renamed), "--input", s(&input)], Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_truncated_jpeg_and_an_image_claiming_huge_dimensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, bundle) = tiny(dir.path());
    let cat = std::fs::read(root().join("models/sample/cat.jpg")).unwrap();
    let half = dir.path().join("half.jpg");
    std::fs::write(&half, &cat[..cat.len() / 2]).unwrap();
    fails_with(&["run", s(&bundle), "--input", s(&half)], "ends before its end-of-image marker");
    // A PNG header declaring 100000 x 100000 pixels (30 GB of RGB) over a few bytes of data.
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, png_declaring(100_000, 100_000)).unwrap();
    fails_with(&["run", s(&bundle), "--input", s(&huge)], "huge.png: cannot decode the image");
    // Within the limits but with its pixel data missing.
    let short = dir.path().join("short.png");
    std::fs::write(&short, png_declaring(3000, 3000)).unwrap();
    fails_with(&["run", s(&bundle), "--input", s(&short)], "short.png: cannot decode the image");
}

/// A PNG whose header declares `w x h` RGB pixels, followed by a tiny IDAT.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes (stored block).
    chunk(&mut out, b"IDAT", &[0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0x00, 0x04, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn nonfinite_weights_and_negative_variances_are_refused_unless_allowed() {
    use netc_runtime::weights::{write_file, OwnedTensor};
    let dir = tempfile::tempdir().unwrap();
    let (net, weights, _) = tiny(dir.path());
    let input = dir.path().join("x.npy");
    netc_runtime::io::npy::write(&input, &netc_runtime::Tensor::zeros(vec![1, 3, 16, 16])).unwrap();
    let file = netc_runtime::WeightFile::open(&weights).unwrap();
    let mut tensors = std::collections::BTreeMap::new();
    for (name, entry) in file.tensors() {
        let t = match entry.dtype {
            netc_runtime::weights::Dtype::F32 => OwnedTensor::F32 {
                shape: entry.shape.clone(),
                data: file.f32_data(name).unwrap().into_owned(),
            },
            _ => OwnedTensor::I64 { shape: entry.shape.clone(), data: vec![0] },
        };
        tensors.insert(name.clone(), t);
    }
    let with = |key: &str, index: usize, value: f32, file: &str| {
        let mut t = tensors.clone();
        if let Some(OwnedTensor::F32 { data, .. }) = t.get_mut(key) {
            data[index] = value;
        }
        let path = dir.path().join(file);
        write_file(&path, &t).unwrap();
        path
    };
    let nan = with("conv.weight", 5, f32::NAN, "nan.safetensors");
    let args = |w: &Path| {
        vec![
            "run".to_string(),
            s(&net).into(),
            "--weights".into(),
            s(w).into(),
            "--input".into(),
            s(&input).into(),
        ]
    };
    let a = args(&nan);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    fails_with(&a, "nan.safetensors: tensor `conv.weight` holds NaN at index 5: weights must be finite");
    let mut allowed = a.clone();
    allowed.push("--allow-nonfinite");
    let (code, err) = run_bounded(&allowed, Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    let inf = with("fc.bias", 2, f32::INFINITY, "inf.safetensors");
    let a = args(&inf);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    fails_with(&a, "tensor `fc.bias` holds inf at index 2");
    let negative = with("bn.running_var", 1, -0.5, "negvar.safetensors");
    let a = args(&negative);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    fails_with(
        &a,
        "tensor `bn.running_var` holds the variance -0.5 at index 1: variances cannot be negative",
    );
}

#[test]
fn a_loop_of_a_hundred_thousand_layers_elaborates_in_linear_time() {
    // Generated names once probed `relu`, `relu_1`, ... from the start for every node: quadratic,
    // minutes for this loop. Linear naming takes a fraction of a second; the bound only catches a
    // return of the quadratic behaviour.
    let text = "network long(x: [3, 8, 8]) {\n  y = x\n  for i in 0..100000 { y = y |> relu }\n  y\n}\n";
    let start = Instant::now();
    let graph = crate::common::compile_text(text).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(graph.node_ids().count(), 100_001);
    assert!(start.elapsed() < Duration::from_secs(30), "elaboration took {:?}", start.elapsed());
    let names: std::collections::HashSet<&str> =
        graph.node_ids().map(|id| graph.node(id).name.as_str()).collect();
    assert_eq!(names.len(), 100_001, "generated names are unique");
}

#[test]
fn a_huge_single_line_source_is_quoted_around_the_caret_only() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide.net");
    let line = format!("network w(x: [3, 8, 8]) {{ y = x {} |> frobnicate }}\n", " ".repeat(1_000_000));
    std::fs::write(&wide, line).unwrap();
    let (code, err) = run_bounded(&["check", s(&wide)], Duration::from_secs(60));
    assert_eq!(code, 1);
    assert!(err.contains("no layer or block named `frobnicate`") && err.contains("wide.net:1:"), "{err}");
    assert!(err.len() < 2_000, "the diagnostic echoes {} bytes", err.len());
    let excerpt = err.lines().find(|l| l.contains("frobnicate }")).expect("the excerpt shows the name");
    let caret = err.lines().find(|l| l.trim_end().ends_with("^^^^^^^^^^")).expect("a caret line");
    assert_eq!(excerpt.find("frobnicate"), caret.find('^'), "the caret is under the name:\n{err}");
}

#[test]
fn thread_counts_are_bounded_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, bundle) = tiny(dir.path());
    fails_with(
        &["run", s(&bundle), "--input", "x.npy", "--threads", "100000"],
        "not a thread count from 1 to 1024",
    );
    fails_with(
        &["run", s(&bundle), "--input", "x.npy", "--threads", "0"],
        "not a thread count from 1 to 1024",
    );
    fails_with(&["bench", s(&bundle), "--threads", "5000"], "5000");
}

/// The loaders the fuzz targets drive (fuzz/fuzz_targets/), by seed directory: each must accept
/// or refuse its input with an error, never panic.
fn load_as(target: &str, bytes: &[u8]) {
    let label = Path::new("seed");
    match target {
        "parse_check" => {
            let path = root().join("models/fuzzed.net");
            if let Ok(g) = netc_compiler::compile_bytes(&path, bytes, &Default::default()) {
                netc_compiler::ir::verify(&g).unwrap();
            }
        }
        "weights_bind" => {
            let text = "network tiny(x: [3, 4, 4]) {\n  x |> conv(2, 3, pad = 1) @conv |> batchnorm @bn |> relu\n    |> flatten |> linear(5) @fc\n}\n";
            let graph = crate::common::compile_text(text).unwrap();
            if let Ok(file) = netc_runtime::WeightFile::from_bytes(label, bytes.to_vec()) {
                let _ = file.bind(&graph);
            }
        }
        "bundle_load" => {
            if let Ok(b) = netc_runtime::bundle::Bundle::from_bytes(label, bytes) {
                if let Ok(p) = b.program() {
                    let _ = b.weights(&p);
                }
            }
        }
        "npy_read" => {
            if let Ok(t) = netc_runtime::io::npy::from_bytes(label, bytes) {
                assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
            }
        }
        "image_decode" => {
            if let Ok(rgb) = netc_runtime::io::image::decode_bytes(label, bytes) {
                assert_eq!(netc_runtime::io::image::preprocess(&rgb, 8, 8).shape, [1, 3, 8, 8]);
            }
        }
        other => panic!("no loader for fuzz seeds `{other}`"),
    }
}

#[test]
fn every_fuzz_seed_and_its_truncations_and_bit_flips_go_through_its_loader_without_a_panic() {
    let seeds = root().join("fuzz/seeds");
    let mut count = 0;
    for dir in std::fs::read_dir(&seeds).unwrap() {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        for file in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            load_as(&target, &bytes);
            // Cut at a few points, and a byte flipped at a few others (a smoke test of the
            // fuzzers' first mutations; the fuzzers themselves run for millions).
            for k in 1..8 {
                load_as(&target, &bytes[..bytes.len() * k / 8]);
                let mut flipped = bytes.clone();
                let at = bytes.len() * k / 8;
                if at < flipped.len() {
                    flipped[at] ^= 0x5a;
                    load_as(&target, &flipped);
                }
            }
            count += 1;
        }
    }
    assert!(count >= 5 * 3, "expected seeds for every target, found {count}");
    // Found by `npy_read`: a header length field of 3.6 GB over a 56-byte file once made the
    // parser allocate it.
    let oom = std::fs::read(seeds.join("npy_read/regression-oom-header-length.npy")).unwrap();
    let err = netc_runtime::io::npy::from_bytes(Path::new("x.npy"), &oom).unwrap_err();
    assert!(err.to_string().contains("the header declares 3632594294 bytes"), "{err}");
}
