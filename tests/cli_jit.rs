//! The JIT from the command line: compiled bundles, `netc bench`, kernel dumps, and bad bundles.

use crate::common::run_netc as run;
use crate::common::{model, netc};
use std::path::Path;

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "netc {args:?} failed:\n{err}");
    out
}

/// He-initialised resnet18 weights and their bundle, in `dir`.
fn resnet18_bundle(dir: &Path) -> (String, String) {
    let weights = dir.join("r18.safetensors").to_str().unwrap().to_string();
    let bundle = dir.join("r18.netc").to_str().unwrap().to_string();
    let net = model("resnet18");
    ok(&["init", net.to_str().unwrap(), "-o", &weights]);
    ok(&["compile", net.to_str().unwrap(), "--weights", &weights, "-o", &bundle]);
    (weights, bundle)
}

#[test]
fn a_bundle_runs_without_weights_and_matches_the_net_file_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, bundle) = resnet18_bundle(dir.path());
    let net = model("resnet18");
    let cat = "models/sample/cat.jpg";
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    ok(&["run", &bundle, "--input", cat, "--output", &out("bundle.npy")]);
    ok(&["run", net.to_str().unwrap(), "--weights", &weights, "--input", cat, "--output", &out("jit.npy")]);
    ok(&[
        "run",
        net.to_str().unwrap(),
        "--weights",
        &weights,
        "--input",
        cat,
        "--backend",
        "reference",
        "--output",
        &out("ref.npy"),
    ]);
    let read = |name: &str| netc_runtime::io::npy::read(Path::new(&out(name))).unwrap();
    let (b, j, r) = (read("bundle.npy"), read("jit.npy"), read("ref.npy"));
    assert_eq!(b.data, j.data, "a bundle computes exactly what the .net path computes");
    crate::common::assert_close("JIT vs reference", &j, &r);
}

/// A network whose squeeze-and-excitation product the optimiser folds into the next 1x1
/// convolution (`channel_scale`) is written as format version 3, which earlier netc versions
/// refuse instead of misreading; one without such a convolution stays version 2. Both run here,
/// the bundle computing what the .net file computes, and the reference agreeing.
#[test]
fn a_bundle_with_a_channel_scaled_convolution_is_format_version_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let se = "s = x |> global_avgpool |> conv(4, 1) @f1 |> silu |> conv(16, 1) @f2 |> sigmoid";
    for (name, body, version) in [
        ("scaled", "x * s |> conv(8, 1) @p |> global_avgpool |> flatten", 3),
        ("product", "(x * s |> conv(8, 3, pad = 1) @p |> global_avgpool |> flatten, s |> flatten)", 2),
    ] {
        let net = path(&format!("{name}.net"));
        std::fs::write(&net, format!("network {name}(x: [16, 20, 20]) {{ {se} \n {body} }}")).unwrap();
        let (weights, bundle) = (path(&format!("{name}.safetensors")), path(&format!("{name}.netc")));
        ok(&["init", &net, "-o", &weights]);
        ok(&["compile", &net, "--weights", &weights, "-o", &bundle]);
        let info: serde_json::Value =
            serde_json::from_str(&ok(&["info", &bundle, "--format", "json"])).unwrap();
        assert_eq!(info["format_version"], version, "{name}");
        let x = path("x.npy");
        netc_runtime::io::npy::write(
            Path::new(&x),
            &netc_runtime::tensor::Tensor::new(
                vec![2, 16, 20, 20],
                (0..12800).map(|i| (i % 97) as f32 / 97.0).collect(),
            )
            .unwrap(),
        )
        .unwrap();
        let out = |what: &str| path(&format!("{name}.{what}.npy"));
        ok(&["run", &bundle, "--input", &x, "--output", &out("bundle")]);
        ok(&["run", &net, "--weights", &weights, "--input", &x, "--output", &out("jit")]);
        ok(&[
            "run",
            &net,
            "--weights",
            &weights,
            "--input",
            &x,
            "--backend",
            "reference",
            "--output",
            &out("ref"),
        ]);
        let read = |what: &str| netc_runtime::io::npy::read(Path::new(&out(what))).unwrap();
        assert_eq!(read("bundle").data, read("jit").data, "{name}: bundle and .net file");
        crate::common::assert_close(name, &read("jit"), &read("ref"));
    }
}

#[test]
fn a_bundle_refuses_weights_and_the_reference_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, bundle) = resnet18_bundle(dir.path());
    let (code, _, err) = run(&["run", &bundle, "--weights", &weights, "--input", "models/sample/cat.jpg"]);
    assert_ne!(code, 0);
    assert!(err.contains("carries its weights"), "{err}");
    let (code, _, err) = run(&["run", &bundle, "--backend", "reference", "--input", "models/sample/cat.jpg"]);
    assert_ne!(code, 0);
    assert!(err.contains("reference backend needs the .net file"), "{err}");
}

#[test]
fn corrupted_truncated_and_foreign_bundles_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = resnet18_bundle(dir.path());
    let bytes = std::fs::read(&bundle).unwrap();
    let bad = dir.path().join("bad.netc");
    let bad_s = bad.to_str().unwrap();
    let check = |content: &[u8], expect: &str| {
        std::fs::write(&bad, content).unwrap();
        let (code, _, err) = run(&["run", bad_s, "--input", "models/sample/cat.jpg"]);
        assert_ne!(code, 0, "{expect}");
        assert!(err.contains(expect) && err.contains("bad.netc"), "expected `{expect}` in:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let mut flipped = bytes.clone();
    let mid = bytes.len() / 2;
    flipped[mid] ^= 0x40;
    check(&flipped, "checksum");
    check(&bytes[..bytes.len() - 100], "truncated");
    let mut other_version = bytes.clone();
    other_version[8] = 99;
    check(&other_version, "format version 99");
}

#[test]
fn bench_reports_latency_and_throughput_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, bundle) = resnet18_bundle(dir.path());
    for source in
        [vec![bundle.as_str()], vec![model("resnet18").to_str().unwrap(), "--weights", weights.as_str()]]
    {
        let mut args = vec!["bench"];
        args.extend(source.iter().copied());
        args.extend(["--batch", "2", "--threads", "2", "--iters", "3", "--warmup", "1", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        for field in ["median_ms", "p90_ms", "images_per_s"] {
            assert!(v[field].as_f64().unwrap() > 0.0, "{field}: {v}");
        }
        assert_eq!((v["batch"].as_u64(), v["threads"].as_u64()), (Some(2), Some(2)));
        assert!(v["p90_ms"].as_f64() >= v["median_ms"].as_f64());
        // The widest ISA by default, or the one NETC_ISA names.
        let auto = netc_compiler::codegen::IsaChoice::Auto.resolve().unwrap();
        assert_eq!(v["isa"].as_str(), Some(auto.name()), "the ISA --isa auto picks: {v}");
    }
}

/// `--profile` times every kernel over the timed batches: in JSON, one row per kernel (median ms,
/// GFLOP/s, implementation) and the same summed per kernel family; in text, both tables.
#[test]
fn bench_profile_times_every_kernel_and_sums_them_by_family() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = resnet18_bundle(dir.path());
    let args = ["bench", bundle.as_str(), "--iters", "3", "--warmup", "1", "--profile", "--format", "json"];
    let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    let rows = v["profile"].as_array().unwrap();
    // ResNet-18's kernels: the stem, 16 3x3 convs (residual adds fused), 3 projection
    // shortcuts, the max pool, the average pool and the classifier.
    assert!(rows.len() >= 20, "{rows:?}");
    let ms = |r: &serde_json::Value| r["ms"].as_f64().unwrap();
    assert!(rows.windows(2).all(|w| ms(&w[0]) >= ms(&w[1])), "slowest first: {rows:?}");
    assert!(rows.iter().any(|r| r["kernel"].as_str().unwrap().starts_with("fc")), "{rows:?}");
    let families = v["families"].as_array().unwrap();
    for f in families {
        let name = f["family"].as_str().unwrap();
        let members: Vec<_> = rows
            .iter()
            .filter(|r| r["implementation"].as_str().unwrap().rsplit_once('.').unwrap().0 == name)
            .collect();
        assert_eq!(f["kernels"].as_u64().unwrap() as usize, members.len(), "{name}");
        let sum: f64 = members.iter().map(|r| ms(r)).sum();
        assert!((ms(f) - sum).abs() <= 1e-9 * sum.max(1.0), "{name}: {} against {sum}", ms(f));
    }
    let counted: u64 = families.iter().map(|f| f["kernels"].as_u64().unwrap()).sum();
    assert_eq!(counted as usize, rows.len());
    let text = ok(&["bench", bundle.as_str(), "--iters", "2", "--warmup", "0", "--profile"]);
    assert!(text.contains("by kernel family:") && text.contains("conv."), "{text}");
}

/// One bundle, compiled once, runs with the kernels of every ISA the host has (the packed layout is
/// the same for all), each agreeing with the reference interpreter on the .net file.
#[test]
fn a_bundle_runs_on_every_isa_of_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, bundle) = resnet18_bundle(dir.path());
    let net = model("resnet18");
    let cat = "models/sample/cat.jpg";
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    ok(&[
        "run",
        net.to_str().unwrap(),
        "--weights",
        &weights,
        "--backend",
        "reference",
        "--input",
        cat,
        "--output",
        &out("ref.npy"),
    ]);
    let reference = netc_runtime::io::npy::read(std::path::Path::new(&out("ref.npy"))).unwrap();
    for isa in crate::common::host_isas() {
        let file = out(&format!("{isa}.npy"));
        ok(&["run", &bundle, "--isa", isa.name(), "--input", cat, "--output", &file]);
        let got = netc_runtime::io::npy::read(std::path::Path::new(&file)).unwrap();
        crate::common::assert_close(&format!("bundle on {isa}"), &got, &reference);
    }
}

#[test]
fn the_isa_can_be_forced_and_a_missing_one_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = resnet18_bundle(dir.path());
    let bench = |isa: &str| {
        let args =
            ["bench", bundle.as_str(), "--isa", isa, "--iters", "1", "--warmup", "0", "--format", "json"];
        run(&args)
    };
    for isa in netc_compiler::codegen::Isa::ALL {
        let (code, stdout, err) = bench(isa.name());
        if isa.host_supports() {
            assert_eq!(code, 0, "{isa}: {err}");
            let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(v["isa"].as_str(), Some(isa.name()));
        } else {
            assert_ne!(code, 0);
            assert!(err.contains("lacks") && err.contains(isa.name()), "{err}");
            assert!(!err.contains("panicked"), "{err}");
            eprintln!("checked the error for {isa}, which this host lacks");
        }
    }
    let (code, _, err) = bench("neon");
    assert_ne!(code, 0);
    assert!(err.contains("not an ISA") && err.contains("avx512"), "{err}");
    // NETC_ISA chooses when --isa is auto (the default).
    let out = netc()
        .args(["bench", bundle.as_str(), "--iters", "1", "--warmup", "0", "--format", "json"])
        .env("NETC_ISA", "sse")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["isa"].as_str(), Some("sse"));
    let out =
        netc().args(["bench", bundle.as_str(), "--iters", "1"]).env("NETC_ISA", "mmx").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NETC_ISA=mmx is not an ISA"));
}

/// `--micro-batch` (run and bench): a number of images per pass, `whole` or `auto`; bench reports
/// the passes' size, and `run` writes the same logits in passes as in one; a bad value is a clear
/// usage error.
#[test]
fn micro_batches_can_be_chosen_and_a_bad_size_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = resnet18_bundle(dir.path());
    for (setting, samples) in [("2", 2), ("whole", 3), ("7", 3)] {
        let args = [
            "bench",
            &bundle,
            "--batch",
            "3",
            "--micro-batch",
            setting,
            "--iters",
            "1",
            "--warmup",
            "0",
            "--format",
            "json",
        ];
        let v: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        assert_eq!(v["micro_batch"].as_u64(), Some(samples), "{setting}: {v}");
    }
    let input = dir.path().join("in.npy");
    let shape = vec![3, 3, 224, 224];
    let batch = netc_runtime::Tensor::new(shape.clone(), netc_runtime::fill::input(&shape)).unwrap();
    netc_runtime::io::npy::write(&input, &batch).unwrap();
    let logits = |setting: &str| {
        let out = dir.path().join(format!("out-{setting}.npy"));
        let (input, out_arg) = (input.to_str().unwrap(), out.to_str().unwrap());
        ok(&["run", &bundle, "--input", input, "--output", out_arg, "--micro-batch", setting]);
        std::fs::read(&out).unwrap()
    };
    assert_eq!(logits("1"), logits("whole"), "the logits of passes of one image and of the whole batch");
    for bad in ["0", "-2", "half"] {
        let setting = format!("--micro-batch={bad}");
        let (code, _, err) = run(&["bench", &bundle, &setting, "--iters", "1"]);
        assert_ne!(code, 0, "{bad}");
        assert!(
            err.contains("--micro-batch") && err.contains("auto, whole or a positive number"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn kernels_can_be_dumped_as_clif_and_assembly_named_by_their_nodes() {
    let net = model("resnet18");
    let clif = ok(&["ir", net.to_str().unwrap(), "--stage", "clif"]);
    assert!(
        clif.contains("; ---- kernel `layer1.0.conv2 winograd+bias+add+relu`"),
        "{}",
        &clif[..2000.min(clif.len())]
    );
    assert!(clif.contains("function") && clif.contains("f32x4"));
    let asm = ok(&["ir", net.to_str().unwrap(), "--stage", "asm"]);
    assert!(asm.contains("vfmadd"), "{}", &asm[..2000.min(asm.len())]);
    // Each kernel names the implementation it got; a tiled one lists its assembled tiles.
    for isa in crate::common::host_isas() {
        let asm = ok(&["ir", net.to_str().unwrap(), "--stage", "asm", "--isa", isa.name()]);
        for head in [
            format!("`conv1 conv+bias+relu`: conv.rowpanel.{isa}:"),
            format!("`layer1.0.conv2 winograd+bias+add+relu`: conv.winograd.{isa}:"),
        ] {
            assert!(asm.contains(&head), "{isa}: no {head}");
        }
        if isa.name() != "sse" {
            assert!(asm.contains("; tile netc_tile_"), "{isa}: no assembled tile listed");
        }
    }
}

#[test]
fn the_jit_runs_a_model_as_written_with_o0() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("a.safetensors");
    let net = model("alexnet_paper");
    ok(&["init", net.to_str().unwrap(), "-o", weights.to_str().unwrap()]);
    let a = dir.path().join("o0.npy");
    let b = dir.path().join("o1.npy");
    let cat = "models/sample/cat.jpg";
    ok(&[
        "run",
        net.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        cat,
        "-O0",
        "--output",
        a.to_str().unwrap(),
    ]);
    ok(&[
        "run",
        net.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        cat,
        "--output",
        b.to_str().unwrap(),
    ]);
    let (a, b) = (netc_runtime::io::npy::read(&a).unwrap(), netc_runtime::io::npy::read(&b).unwrap());
    crate::common::assert_close("optimised vs -O0", &b, &a);
}

#[test]
fn compile_proves_every_kernel_in_bounds_and_run_can_check_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("r18.safetensors").to_str().unwrap().to_string();
    let bundle = dir.path().join("r18.netc").to_str().unwrap().to_string();
    let net = model("resnet18");
    ok(&["init", net.to_str().unwrap(), "-o", &weights]);
    let (code, _, err) = run(&["compile", net.to_str().unwrap(), "--weights", &weights, "-o", &bundle]);
    assert_eq!(code, 0, "{err}");
    let opened = netc_runtime::bundle::Bundle::open(std::path::Path::new(&bundle)).unwrap();
    for isa in crate::common::host_isas() {
        assert!(
            err.contains(&format!(" for {isa}")),
            "compile must say it proved the kernels for {isa}:\n{err}"
        );
        assert!(
            opened.bounds_proved_for(isa),
            "the bundle must record that its kernels were proved for {isa}"
        );
    }
    let (code, _, err) =
        run(&["run", &bundle, "--input", "models/sample/cat.jpg", "--check-bounds", "--top", "1"]);
    assert_eq!(code, 0, "{err}");
}
