//! Front-end speed: parse + elaborate + shape-check of the largest seed model.

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::Path;

fn parse_and_check(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for model in ["resnet152", "googlenet"] {
        let path = root.join(format!("{model}.net"));
        c.bench_function(&format!("check {model}"), |b| {
            b.iter(|| {
                let graph = netc_compiler::compile_file(&path, &Default::default()).expect("model compiles");
                netc_compiler::ir::verify(&graph).expect("graph verifies");
                graph
            })
        });
    }
}

criterion_group!(benches, parse_and_check);
criterion_main!(benches);
