//! What `summary` and `ir` read: a `.net` source, elaborated, or a compiled bundle's stored
//! optimised graph (bundles are recognised by content, or by the `.netc` extension).

use anyhow::bail;
use netc_compiler::ir::Graph;
use netc_runtime::bundle::Bundle;
use std::path::Path;

/// A model file opened for looking inside.
pub enum Opened {
    /// A `.net` source as written.
    Source(Graph),
    /// A bundle: the optimised graph it stores (what `netc run` executes).
    Bundle(Graph),
}

/// Whether `path` is to be read as a bundle: it starts with the bundle magic, or it is named
/// `.netc` (a damaged bundle then says so, rather than being parsed as `.net` text).
pub fn is_bundle_file(path: &Path) -> bool {
    netc::is_bundle(path) || path.extension().is_some_and(|e| e == "netc")
}

/// Opens `path`: a bundle's stored graph, or a `.net` source elaborated (with `input` as its input
/// shape). `input` cannot change a bundle, whose shapes are fixed.
pub fn open(path: &Path, input: Option<super::ShapeArg>) -> anyhow::Result<Opened> {
    if !is_bundle_file(path) {
        return Ok(Opened::Source(super::load_model(path, input)?));
    }
    if input.is_some() {
        bail!(
            "{}: a compiled bundle's input shape is fixed; --input applies to .net sources",
            path.display()
        );
    }
    let bundle = Bundle::open(path)?;
    let graph = bundle.program()?.graph().clone();
    Ok(Opened::Bundle(graph))
}

/// Refuses optimiser options for a bundle, whose graph is optimised already: `what` names the
/// command.
pub fn refuse_optimizer_options(path: &Path, opt: &super::OptArgs, what: &str) -> anyhow::Result<()> {
    let tuned = !matches!(opt.tune_for, netc_compiler::codegen::IsaChoice::Auto);
    if !opt.disable_pass.is_empty() || opt.level.is_some() || opt.stats || tuned {
        bail!(
            "{}: a compiled bundle holds an optimised graph already; {what} takes no optimiser \
             options for it (--disable-pass, -O, --stats, --tune-for)",
            path.display()
        );
    }
    Ok(())
}
