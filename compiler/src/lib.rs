// Diagnostics are returned once per compilation on the error path; boxing them would only add
// indirection to every `?` in the front end.
#![allow(clippy::result_large_err)]

//! netc-compiler: the `.net` front end (grammar, AST, diagnostics), the IR with shape inference,
//! and the stages that turn it into an executable program.
//!
//! The front end ([`syntax`], [`elaborate`]: pest, the parser and the elaborator) sits behind the
//! default cargo feature `frontend`. Without it the crate is what running a compiled bundle
//! needs: the IR, the passes (lowering legalises with them), lowering and the code generator.

pub mod codegen;
#[cfg(feature = "frontend")]
pub mod elaborate;
pub mod files;
pub mod ir;
pub mod lower;
pub mod passes;
#[cfg(feature = "frontend")]
pub mod syntax;

#[cfg(feature = "frontend")]
pub use elaborate::{compile_bytes, compile_file, compile_source, Options};
#[cfg(feature = "frontend")]
pub use syntax::Diagnostic;

/// Test support shared by the crate's unit tests.
#[cfg(all(test, feature = "frontend"))]
pub(crate) mod testing {
    use std::path::PathBuf;

    /// Every seed model file in `models/`, compiled as written (panics with the diagnostic otherwise).
    pub fn seed_models() -> Vec<(PathBuf, crate::ir::Graph)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("models/ exists")
            .map(|e| e.expect("readable entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "net"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let g = crate::compile_file(&p, &Default::default()).unwrap_or_else(|d| panic!("{d}"));
                (p, g)
            })
            .collect()
    }
}
