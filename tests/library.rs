//! The `netc` library facade as an embedding program uses it: one `Model` shared by many threads,
//! bundles and `.net` sources, caller buffers, and errors of one type.

use crate::common::root;
use netc::{Model, Options, Tensor, TensorView};
use netc_runtime::fill::input as fill_input;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A ResNet cut down from the seed blocks (stem, a basic block, a strided bottleneck with a
/// projection, the head) on a 3x64x64 input, with He weights.
fn small_resnet(dir: &Path) -> (PathBuf, PathBuf) {
    let net = dir.join("small_resnet.net");
    let blocks = root().join("models/blocks/resnet.net");
    std::fs::write(
        &net,
        format!(
            "use \"{}\"\n\nnetwork small_resnet(image: [3, 64, 64]) {{\n  x = resnet_stem(image)\n  x = basic_block(x, 64) @layer1.0\n  x = bottleneck(x, 32, 2) @layer2.0\n  x |> resnet_head(10)\n}}\n",
            blocks.display()
        ),
    )
    .unwrap();
    let weights = dir.join("small_resnet.safetensors");
    netc::write_random_weights(&net, &weights, 11).unwrap();
    (net, weights)
}

fn input(batch: usize) -> Tensor {
    let shape = vec![batch, 3, 64, 64];
    Tensor::new(shape.clone(), fill_input(&shape)).unwrap()
}

#[test]
fn eight_threads_sharing_one_model_get_the_single_threaded_bits() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = small_resnet(dir.path());
    let single =
        Model::from_net(&net, &weights, &Options { threads: Some(1), ..Default::default() }).unwrap();
    let x = input(2);
    let expected = single.run(&x).unwrap();
    assert_eq!(expected.shape, [2, 10]);
    assert!(expected.data.iter().all(|v| v.is_finite()));

    let shared = Arc::new(
        Model::from_net(&net, &weights, &Options { threads: Some(2), ..Default::default() }).unwrap(),
    );
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (model, x) = (Arc::clone(&shared), x.clone());
            std::thread::spawn(move || (0..100).map(|_| model.run(&x).unwrap()).collect::<Vec<Tensor>>())
        })
        .collect();
    for worker in workers {
        for got in worker.join().unwrap() {
            assert_eq!(got.shape, expected.shape);
            let same = got.data.iter().zip(&expected.data).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "a concurrent run differs from the single-threaded one");
        }
    }
}

#[test]
fn a_bundle_loads_by_itself_and_agrees_with_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = small_resnet(dir.path());
    let bundle = dir.path().join("small.netc");
    let status = crate::common::netc()
        .args(["compile", net.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "-o"])
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(status.success());
    let from_source = Model::from_net(&net, &weights, &Options::default()).unwrap();
    let loaded = Model::load(&bundle).unwrap();
    let x = input(3);
    assert_eq!(loaded.run(&x).unwrap(), from_source.run(&x).unwrap());
    assert_eq!(loaded.input_shapes(), [("image".to_string(), vec![3, 64, 64])]);
    // `open` tells the two apart by content, not by extension.
    let renamed = dir.path().join("small.bin");
    std::fs::copy(&bundle, &renamed).unwrap();
    assert!(Model::open(&renamed, None, &Options::default()).is_ok());
}

#[test]
fn outputs_can_be_written_into_caller_buffers_from_borrowed_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = small_resnet(dir.path());
    let model = Model::from_net(&net, &weights, &Options::default()).unwrap();
    let x = input(2);
    let owned = model.run(&x).unwrap();
    assert_eq!(model.output_shapes(2), [vec![2, 10]]);
    let mut out = vec![0f32; 20];
    let view = TensorView::new(&x.shape, &x.data).unwrap();
    model.run_into(&[view], &mut [&mut out]).unwrap();
    assert_eq!(out, owned.data);
    let err = model.run_into(&[view], &mut [&mut out[..19]]).unwrap_err();
    assert!(err.to_string().contains("holds 20 floats for this batch, but its buffer holds 19"), "{err}");
}

#[test]
fn every_failure_is_one_error_type_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (net, weights) = small_resnet(dir.path());
    let model = Model::from_net(&net, &weights, &Options::default()).unwrap();
    let wrong = Tensor::new(vec![1, 3, 32, 32], vec![0.0; 3 * 32 * 32]).unwrap();
    let err = model.run(&wrong).unwrap_err();
    assert!(matches!(err, netc::Error::Run(_)) && err.to_string().contains("[N, 3, 64, 64]"), "{err}");

    let broken = dir.path().join("broken.net");
    std::fs::write(&broken, "network b(x: [3, 8, 8]) {\n  x |> conv(4, 3) |> nonsense\n}\n").unwrap();
    let err = Model::from_net(&broken, &weights, &Options::default()).err().unwrap();
    assert!(matches!(err, netc::Error::Source(_)) && err.to_string().contains("broken.net:2:"), "{err}");

    let err =
        Model::from_net(&net, dir.path().join("missing.safetensors"), &Options::default()).err().unwrap();
    assert!(
        matches!(err, netc::Error::Weights(_)) && err.to_string().contains("missing.safetensors"),
        "{err}"
    );

    let err = Model::load(&net).err().unwrap();
    assert!(matches!(err, netc::Error::Bundle(_)), "{err}");
    let err = Model::open(&net, None, &Options::default()).err().unwrap();
    assert!(err.to_string().contains("needs its weights"), "{err}");

    let options = Options { disabled_passes: vec!["no-such-pass".into()], ..Default::default() };
    let err = Model::from_net(&net, &weights, &options).err().unwrap();
    assert!(err.to_string().contains("no optimisation pass named `no-such-pass`"), "{err}");
}

/// The features cargo enables on `netc-compiler` when building `package` with `args`.
fn compiler_features(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal,features", "--prefix", "none", "-i", "netc-compiler"])
        .args(args)
        .current_dir(root())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("netc-compiler"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn running_bundles_does_not_build_the_front_end() {
    let runtime = compiler_features(&["-p", "netc-runtime"]);
    assert!(runtime.contains("netc-compiler v") && !runtime.contains("netc-compiler feature"), "{runtime}");
    let bundles_only = compiler_features(&["-p", "netc", "--no-default-features"]);
    assert!(
        bundles_only.contains("netc-compiler v") && !bundles_only.contains("netc-compiler feature"),
        "{bundles_only}"
    );
    let full = compiler_features(&["-p", "netc"]);
    assert!(full.contains("netc-compiler feature \"frontend\""), "{full}");
}
