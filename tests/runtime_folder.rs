//! `netc run --input FOLDER --format jsonl|csv`: a folder streamed through the model a batch at a
//! time, checked against the same images run as explicit files in one batch.

use crate::common::{path_str as s, run_netc as run};
use netc_runtime::io::npy;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// How many readable images the test folder holds.
const IMAGES: usize = 30;

/// A tiny classifier of 10 classes on 3x32x32 inputs, and `netc init` weights for it.
fn tiny(dir: &Path) -> (PathBuf, PathBuf) {
    let net = dir.join("tiny.net");
    std::fs::write(
        &net,
        "network tiny(image: [3, 32, 32]) {\n  image |> conv(8, 3, pad = 1) @conv |> batchnorm @bn |> relu\n        |> conv(8, 3, 2, pad = 1) @conv2 |> relu |> global_avgpool |> flatten |> linear(10) @fc\n}\n",
    )
    .unwrap();
    let weights = dir.join("tiny.safetensors");
    let (code, _, err) = run(&["init", s(&net), "-o", s(&weights), "--seed", "3"]);
    assert_eq!(code, 0, "{err}");
    (net, weights)
}

/// A folder of `IMAGES` small PNGs of different sizes and patterns (written out of name order),
/// one corrupt `.png` sorting after `img15.png`, a text file and a subfolder with an image.
/// Returns the folder, the readable images in name order and the corrupt file.
fn folder(dir: &Path) -> (PathBuf, Vec<PathBuf>, PathBuf) {
    let images = dir.join("images");
    std::fs::create_dir(&images).unwrap();
    for i in (0..IMAGES).rev() {
        let (w, h) = (24 + (i as u32 * 7) % 40, 20 + (i as u32 * 11) % 50);
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let v = |k: u32| ((x * (k + i as u32) + y * (3 * k + 1) + 17 * i as u32) % 256) as u8;
            image::Rgb([v(1), v(2), v(5)])
        });
        img.save(images.join(format!("img{i:02}.png"))).unwrap();
    }
    let corrupt = images.join("img15_corrupt.png");
    let png = std::fs::read(images.join("img15.png")).unwrap();
    std::fs::write(&corrupt, &png[..png.len() / 2]).unwrap();
    std::fs::write(images.join("notes.txt"), "not an image\n").unwrap();
    std::fs::create_dir(images.join("sub")).unwrap();
    std::fs::copy(images.join("img00.png"), images.join("sub/inner.png")).unwrap();
    let readable = (0..IMAGES).map(|i| images.join(format!("img{i:02}.png"))).collect();
    (images, readable, corrupt)
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Each input's (image, [(class, prob)]) of a jsonl or json result (error lines left out).
fn results(values: &[Value]) -> Vec<(String, Vec<(u64, f64)>)> {
    values
        .iter()
        .filter(|v| v.get("error").is_none())
        .map(|v| {
            let top = v["top"].as_array().unwrap();
            let classes = top.iter().map(|r| (r["class"].as_u64().unwrap(), r["prob"].as_f64().unwrap()));
            (v["image"].as_str().unwrap().to_string(), classes.collect())
        })
        .collect()
}

/// Parses CSV (RFC 4180 quoting) into rows of fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty() && !quoted, "the CSV ends with a line break");
    rows
}

#[test]
fn a_folder_streams_in_batches_like_one_batch_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let (images, readable, corrupt) = folder(dir.path());
    let stream = |batch: &str, extra: &[&str]| {
        let mut args =
            vec!["run", s(&net), "--weights", s(&weights), "--input", s(&images), "--format", "jsonl"];
        args.extend(["--batch", batch]);
        args.extend(extra);
        run(&args)
    };

    let streamed_npy = dir.path().join("streamed.npy");
    let (code, out, err) = stream("7", &["--output", s(&streamed_npy)]);
    assert_eq!(code, 3, "some inputs were skipped: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // One line per input in name order, the corrupt one as an error line in its place.
    let lines = json_lines(&out);
    let names: Vec<&str> = lines.iter().map(|v| v["image"].as_str().unwrap()).collect();
    let mut expected: Vec<String> = readable.iter().map(|p| p.display().to_string()).collect();
    expected.insert(16, corrupt.display().to_string());
    assert_eq!(names, expected);
    let error = lines[16]["error"].as_str().unwrap();
    assert!(error.contains(&format!("{}: cannot decode the image", corrupt.display())), "{error}");
    assert!(lines[16].get("top").is_none());
    assert!(err.contains(&format!("skipped: {}: cannot decode the image", corrupt.display())), "{err}");
    assert!(err.contains(&format!("note: skipped 1 of {} inputs", IMAGES + 1)), "{err}");
    let note = "ignored 1 file without a .jpg, .jpeg, .png or .npy extension and 1 subfolder (not searched)";
    assert!(err.contains(&format!("note: {}: {note}", images.display())), "{err}");
    assert!(lines.iter().all(|v| v.get("top").is_none_or(|t| t.as_array().unwrap().len() == 5)));

    // The same images as explicit files, one batch, printed by --format json: the same results.
    let one_npy = dir.path().join("one.npy");
    let mut args =
        vec!["run", s(&net), "--weights", s(&weights), "--format", "json", "-o", s(&one_npy), "--input"];
    args.extend(readable.iter().map(|p| s(p)));
    let (code, one_batch, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let one_batch: Vec<Value> = serde_json::from_str(&one_batch).unwrap();
    let streamed = results(&lines);
    assert_eq!(streamed.len(), IMAGES);
    assert_eq!(streamed, results(&one_batch));
    // --output: the logits of the inputs that ran, in order, as the one batch computes them.
    let logits = npy::read(&streamed_npy).unwrap();
    assert_eq!(logits.shape, vec![IMAGES, 10]);
    assert_eq!(logits, npy::read(&one_npy).unwrap());

    // Batch sizes do not change the results; a batch of 1 and one larger than the folder.
    for batch in ["1", "32"] {
        let (code, again, err) = stream(batch, &[]);
        assert_eq!(code, 3, "{err}");
        assert_eq!(again, out, "--batch {batch}");
    }

    // --strict: the inputs before the corrupt one print, then the run stops with exit 1.
    let strict_npy = dir.path().join("strict.npy");
    let (code, partial, err) = stream("7", &["--strict", "-o", s(&strict_npy)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("error: {}: cannot decode the image", corrupt.display())), "{err}");
    assert!(err.contains("--strict"), "{err}");
    assert_eq!(partial, out.lines().take(16).map(|l| format!("{l}\n")).collect::<String>());
    assert!(!strict_npy.exists(), "no logits file when --strict stops the run");

    // A folder of readable images only exits 0.
    std::fs::remove_file(&corrupt).unwrap();
    let (code, clean, err) = stream("7", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(results(&json_lines(&clean)), streamed);
}

#[test]
fn bundles_the_reference_backend_csv_and_mixed_inputs_stream_too() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let (images, readable, corrupt) = folder(dir.path());
    std::fs::remove_file(&corrupt).unwrap();
    let base = ["--input", s(&images), "--format", "jsonl", "--batch", "8"];
    let (code, jit, err) = run(&[&["run", s(&net), "--weights", s(&weights)][..], &base].concat());
    assert_eq!(code, 0, "{err}");
    let jit = results(&json_lines(&jit));
    assert_eq!(jit.len(), IMAGES);

    // A compiled bundle gives the JIT's results.
    let bundle = dir.path().join("tiny.netc");
    let (code, _, err) = run(&["compile", s(&net), "--weights", s(&weights), "-o", s(&bundle)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&[&["run", s(&bundle)][..], &base].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(results(&json_lines(&out)), jit);

    // The reference interpreter agrees up to rounding.
    let args = [&["run", s(&net), "--weights", s(&weights), "--backend", "reference"][..], &base].concat();
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let reference = results(&json_lines(&out));
    assert_eq!(reference.len(), jit.len());
    for ((name_r, top_r), (name_j, top_j)) in reference.iter().zip(&jit) {
        assert_eq!(name_r, name_j);
        for ((_, p_r), (_, p_j)) in top_r.iter().zip(top_j) {
            assert!((p_r - p_j).abs() < 1e-4, "{name_r}: {top_r:?} vs {top_j:?}");
        }
    }

    // CSV: a header, then --top rows per input; labels with commas and quotes are quoted.
    let labels = dir.path().join("labels.txt");
    let names: Vec<String> = (0..10).map(|c| format!("class {c}, \"the {c}th\"")).collect();
    std::fs::write(&labels, names.join("\n") + "\n").unwrap();
    let args = [
        "run",
        s(&bundle),
        "--input",
        s(&images),
        "--format",
        "csv",
        "--batch",
        "7",
        "--top",
        "3",
        "--labels",
        s(&labels),
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let rows = parse_csv(&out);
    assert_eq!(rows[0], ["image", "rank", "class", "label", "prob"]);
    assert_eq!(rows.len(), 1 + 3 * IMAGES);
    for (i, (image, top)) in jit.iter().enumerate() {
        for (rank, (class, prob)) in top.iter().take(3).enumerate() {
            let row = &rows[1 + 3 * i + rank];
            assert_eq!(row[0], *image);
            assert_eq!(row[1], (rank + 1).to_string());
            assert_eq!(row[2], class.to_string());
            assert_eq!(row[3], names[*class as usize]);
            // serde_json parses floats to within an ulp or so, Rust exactly.
            let csv_prob = row[4].parse::<f64>().unwrap();
            assert!((csv_prob - prob).abs() <= 1e-15, "{csv_prob} vs {prob}");
        }
    }

    // Folders and files mix, in the order given; an .npy of two samples names each.
    let npy_file = dir.path().join("pair.npy");
    let pair = netc_runtime::Tensor::new(vec![2, 3, 32, 32], vec![0.25; 2 * 3 * 32 * 32]).unwrap();
    npy::write(&npy_file, &pair).unwrap();
    let args = [
        "run",
        s(&bundle),
        "--input",
        s(&readable[3]),
        s(&images),
        s(&npy_file),
        "--format",
        "jsonl",
        "--batch",
        "4",
    ];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let mixed = results(&json_lines(&out));
    assert_eq!(mixed.len(), 1 + IMAGES + 2);
    assert_eq!(mixed[0], jit[3]);
    assert_eq!(mixed[1..=IMAGES], jit[..]);
    assert_eq!(mixed[IMAGES + 1].0, format!("{}[0]", npy_file.display()));
    assert_eq!(mixed[IMAGES + 2].0, format!("{}[1]", npy_file.display()));
    assert_eq!(mixed[IMAGES + 1].1, mixed[IMAGES + 2].1);
}

#[test]
fn streaming_refuses_what_it_cannot_do_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = tiny(dir.path());
    let (images, _, _) = folder(dir.path());
    let fails = |extra: &[&str], expected: &str| {
        let (code, out, err) = run(&[&["run", s(&net), "--weights", s(&weights)][..], extra].concat());
        assert_eq!(code, 1, "{err}");
        assert!(err.lines().any(|l| l.starts_with("error: ") && l.contains(expected)), "{err}");
        assert!(out.is_empty() && !err.contains("panicked"), "{out}{err}");
    };
    fails(
        &["--input", s(&images)],
        &format!("{} is a folder: stream it with --format jsonl or csv", images.display()),
    );
    fails(&["--input", s(&images), "--batch", "4"], "--batch and --strict stream the inputs");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("readme.md"), "nothing here").unwrap();
    fails(&["--input", s(&empty), "--format", "csv"], "the folder holds no .jpg, .jpeg, .png or .npy files");
    let (code, _, err) = run(&[
        "run",
        s(&net),
        "--weights",
        s(&weights),
        "--input",
        s(&images),
        "--format",
        "jsonl",
        "--batch",
        "0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`0` is not a batch size from 1 to 4096"), "{err}");
}
