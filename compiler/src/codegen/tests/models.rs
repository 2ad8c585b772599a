//! Every node of every seed model gets a kernel spec, and the whole model compiles.

use crate::codegen::{compile, CompileOptions, KernelRequest, KernelSpec};
use std::path::Path;
use std::time::Instant;

fn requests(model: &str) -> Vec<KernelRequest> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(model);
    let mut graph = crate::compile_file(&path, &Default::default()).unwrap_or_else(|d| panic!("{d}"));
    crate::passes::optimize(&mut graph, &Default::default()).unwrap();
    let plan = crate::lower::plan(&graph);
    let mut out = Vec::new();
    for &id in &plan.order {
        let node = graph.node(id);
        if let Some(spec) = KernelSpec::for_node(&graph, id, &plan).unwrap_or_else(|e| panic!("{model}: {e}"))
        {
            out.push(KernelRequest { name: format!("{} {}", node.name, node.op.label()), spec });
        }
    }
    out
}

#[test]
fn seed_models_compile_with_every_kernel_proved_in_bounds() {
    for model in ["resnet50.net", "googlenet.net", "alexnet_paper.net", "vgg11.net", "preact_resnet50.net"] {
        let reqs = requests(model);
        for isa in super::host_isas() {
            let t = Instant::now();
            let options = CompileOptions {
                isa: crate::codegen::IsaChoice::Fixed(isa),
                check_bounds: true,
                ..Default::default()
            };
            let k = compile(&reqs, options).unwrap_or_else(|e| panic!("{model} {isa}: {e}"));
            eprintln!(
                "{model}: {} kernels compiled for {isa} in {:.0} ms",
                k.kernels.len(),
                t.elapsed().as_secs_f64() * 1e3
            );
            assert_eq!(k.kernels.len(), reqs.len());
        }
    }
}
