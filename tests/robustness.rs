//! No input may crash the front end: generated and mutated programs must compile or produce a
//! diagnostic, never panic, overflow the stack or hang. `fuzz/` holds the coverage-guided target
//! (cargo fuzz); inputs it found are kept here as regression tests.

use crate::common::{compile_text, root, SEED_MODELS};
use netc_compiler::ir::verify;
use proptest::prelude::*;
use std::path::Path;

/// Compiles `text` as if it were `models/fuzzed.net` (so `use "blocks/..."` resolves); any
/// successful result must also pass `verify`.
fn must_not_crash(text: &str) {
    let path = root().join("models/fuzzed.net");
    if let Ok(g) = netc_compiler::compile_source(&path, text, &Default::default()) {
        verify(&g).unwrap_or_else(|e| panic!("accepted a graph that fails verify: {e}\n{text}"));
    }
}

const TOKENS: &[&str] = &[
    "network",
    "block",
    "use",
    "for",
    "in",
    "as",
    "if",
    "else",
    "scope",
    "sequential",
    "train",
    "and",
    "or",
    "not",
    "true",
    "false",
    "x",
    "y",
    "image",
    "n",
    "i",
    "conv",
    "relu",
    "maxpool",
    "avgpool",
    "linear",
    "batchnorm",
    "concat",
    "flatten",
    "dropout",
    "lrn",
    "global_avgpool",
    "adaptive_avgpool",
    "softmax",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    "=",
    "==",
    "!=",
    "<",
    ">",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "|>",
    "@",
    ".",
    "..",
    ":",
    "_",
    "0",
    "1",
    "2",
    "3",
    "7",
    "64",
    "224",
    "-1",
    "1e-5",
    "99999999999",
    "9223372036854775807",
    "\"M\"",
    "\"blocks/resnet.net\"",
    "#",
    "\n",
    " ",
    ".c",
    ".h",
    ".w",
    "pad",
    "stride",
    "groups",
    "ceil_mode",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..80).prop_map(|t| t.join(" "))
}

/// A seed model's text with a few random edits: deletions, duplications and token insertions.
fn mutated_model() -> impl Strategy<Value = String> {
    let edits = prop::collection::vec(
        (any::<prop::sample::Index>(), 0usize..12, prop::sample::select(TOKENS), 0u8..3),
        1..6,
    );
    (prop::sample::select(SEED_MODELS), edits).prop_map(|(name, edits)| {
        let mut text = std::fs::read_to_string(root().join(format!("models/{name}.net"))).unwrap();
        for (at, len, token, kind) in edits {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            match kind {
                0 => text.replace_range(start..end, ""),
                1 => {
                    let copy = text[start..end].to_string();
                    text.insert_str(start, &copy)
                }
                _ => text.insert_str(start, token),
            }
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_crashes_the_front_end(text in "\\PC{0,200}") {
        must_not_crash(&text);
    }

    #[test]
    fn token_soup_never_crashes_the_front_end(text in token_soup()) {
        must_not_crash(&text);
    }

    #[test]
    fn mutated_seed_models_never_crash_the_front_end(text in mutated_model()) {
        must_not_crash(&text);
    }
}

#[test]
fn deeply_nested_brackets_are_rejected_not_overflowing_the_stack() {
    let text =
        format!("network n(x: [3, 4, 4]) {{ y = {}1{} \n x }}", "(".repeat(100_000), ")".repeat(100_000));
    let d = compile_text(&text).unwrap_err();
    assert!(d.message.contains("nest deeper"), "{d}");
}

#[test]
fn very_long_operator_chains_are_rejected_not_overflowing_the_stack() {
    let text = format!("network n(x: [3, 4, 4]) {{ y = 1{} \n x }}", " + 1".repeat(100_000));
    let d = compile_text(&text).unwrap_err();
    assert!(d.message.contains("nests deeper"), "{d}");
    let text = format!("network n(x: [3, 4, 4]) {{ x{} }}", " |> relu".repeat(100_000));
    assert!(compile_text(&text).is_err());
}

#[test]
fn enormous_loops_hit_a_limit_instead_of_hanging() {
    let d = compile_text("network n(x: [3, 4, 4]) { for i in 0..1000000000 { y = i } \n x }").unwrap_err();
    assert_eq!(d.kind, netc_compiler::syntax::ErrorKind::Limit, "{d}");
    let d =
        compile_text("network n(x: [3, 4, 4]) { for i in 0..100000 { for j in 0..100000 { y = j } } \n x }")
            .unwrap_err();
    assert_eq!(d.kind, netc_compiler::syntax::ErrorKind::Limit, "{d}");
}

#[test]
fn a_block_chain_as_deep_as_the_limit_allows_still_compiles() {
    // 150 distinct blocks, each calling the next: deep, but not recursive.
    let mut text = String::new();
    for i in 0..150 {
        text += &format!("block b{i}(x) {{ x |> b{}() }}\n", i + 1);
    }
    text += "block b150(x) { x |> relu }\nnetwork n(x: [3, 4, 4]) { x |> b0 }\n";
    let g = compile_text(&text).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(g.node(g.outputs[0].value.producer()).instance.len(), 151);
}

/// Inputs kept from fuzzing (tests/fuzz_regressions/: a sample of the coverage corpus of a 10-minute
/// cargo-fuzz run, 181k executions, which found no crash); each must still compile or be diagnosed.
#[test]
fn fuzz_corpus_samples_compile_or_are_diagnosed() {
    let dir = Path::new("tests/fuzz_regressions");
    let entries: Vec<_> = std::fs::read_dir(dir).expect("tests/fuzz_regressions exists").collect();
    assert!(entries.len() >= 10, "the fuzz corpus sample is missing");
    for entry in entries {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        must_not_crash(&String::from_utf8_lossy(&bytes));
    }
}
