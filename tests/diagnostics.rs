//! Diagnostic snapshots: every `tests/diagnostics/*.net` must fail to compile, and its rendered
//! diagnostic (kind, message, file:line:col, source line with caret, block-instance trace) must equal
//! the `.stderr` file beside it. Run with `NETC_BLESS=1` to rewrite the snapshots after an intended
//! change, then review the diff.

use netc_compiler::syntax::ErrorKind;
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/diagnostics")
        .expect("tests/diagnostics exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    files.sort();
    files
}

fn render(path: &Path) -> (ErrorKind, String) {
    match netc_compiler::compile_file(path, &Default::default()) {
        Ok(_) => panic!("{} compiled, but it is a diagnostic case and must fail", path.display()),
        Err(d) => (d.kind, d.to_string()),
    }
}

#[test]
fn every_case_matches_its_snapshot() {
    let bless = std::env::var_os("NETC_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let (_, rendered) = render(&case);
        let snapshot = case.with_extension("stderr");
        if bless {
            std::fs::write(&snapshot, &rendered).expect("write snapshot");
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if expected != rendered {
            failures.push(format!("--- {}\n{expected}+++ actual\n{rendered}", snapshot.display()));
        }
    }
    assert!(failures.is_empty(), "diagnostic snapshots differ:\n{}", failures.join("\n"));
}

fn kind_of(name: &str) -> ErrorKind {
    render(Path::new(&format!("tests/diagnostics/{name}.net"))).0
}

#[test]
fn each_kind_of_mistake_has_its_own_error_kind() {
    assert_eq!(kind_of("syntax_error"), ErrorKind::Syntax);
    assert_eq!(kind_of("unknown_op"), ErrorKind::UnknownName);
    assert_eq!(kind_of("unknown_name"), ErrorKind::UnknownName);
    assert_eq!(kind_of("wrong_arg_type"), ErrorKind::Type);
    assert_eq!(kind_of("wrong_arg_count"), ErrorKind::Arity);
    assert_eq!(kind_of("missing_arg"), ErrorKind::Arity);
    assert_eq!(kind_of("unknown_named_arg"), ErrorKind::Arity);
    assert_eq!(kind_of("add_mismatch"), ErrorKind::Shape);
    assert_eq!(kind_of("concat_mismatch"), ErrorKind::Shape);
    assert_eq!(kind_of("mul_mismatch"), ErrorKind::Shape);
    assert_eq!(kind_of("clamp_without_bound"), ErrorKind::Size);
    assert_eq!(kind_of("clamp_min_above_max"), ErrorKind::Size);
    assert_eq!(kind_of("chunk_unpack"), ErrorKind::Type);
    assert_eq!(kind_of("scope_hyphen"), ErrorKind::Syntax);
    assert_eq!(kind_of("scope_quoted_dot"), ErrorKind::Structure);
    assert_eq!(kind_of("assertion_failed"), ErrorKind::Assertion);
    assert_eq!(kind_of("use_cycle_a"), ErrorKind::Recursion);
    assert_eq!(kind_of("block_recursion"), ErrorKind::Recursion);
    assert_eq!(kind_of("empty_output"), ErrorKind::Size);
    assert_eq!(kind_of("negative_size"), ErrorKind::Size);
    assert_eq!(kind_of("integer_overflow"), ErrorKind::Size);
    assert_eq!(kind_of("absurd_size"), ErrorKind::Size);
    assert_eq!(kind_of("absurd_input"), ErrorKind::Size);
    assert_eq!(kind_of("duplicate_scope"), ErrorKind::Duplicate);
    assert_eq!(kind_of("missing_scope"), ErrorKind::Structure);
    assert_eq!(kind_of("unused_value"), ErrorKind::Structure);
    assert_eq!(kind_of("no_network"), ErrorKind::Structure);
    assert_eq!(kind_of("reserved_word_param"), ErrorKind::Syntax);
    assert_eq!(kind_of("scope_index_brackets"), ErrorKind::Syntax);
    assert_eq!(kind_of("if_without_else_value"), ErrorKind::Structure);
    assert_eq!(kind_of("unused_named_value"), ErrorKind::Structure);
    assert_eq!(kind_of("use_block_defined_twice"), ErrorKind::Duplicate);
    assert_eq!(kind_of("duplicate_scope_in_loop"), ErrorKind::Duplicate);
}

#[test]
fn a_residual_mismatch_shows_both_shapes_and_the_block_instance() {
    let (_, text) = render(Path::new("tests/diagnostics/add_mismatch.net"));
    assert!(text.contains("[32, 32, 32]") && text.contains("[16, 32, 32]"), "{text}");
    assert!(text.contains("in widen @layer1.block (tests/diagnostics/add_mismatch.net:10:9)"), "{text}");
}

#[test]
fn errors_deep_in_blocks_list_every_instance_innermost_first() {
    let (_, text) = render(Path::new("tests/diagnostics/nested_trace.net"));
    let leaf = text.find("in leaf @stage0.part.head").expect("leaf instance in trace");
    let middle = text.find("in middle @stage0.part").expect("middle instance in trace");
    assert!(leaf < middle, "{text}");
}

#[test]
fn diagnostics_are_coloured_only_when_asked_or_on_a_terminal() {
    let case = "tests/diagnostics/unknown_op.net";
    let stderr = |args: &[&str]| {
        let out = crate::common::netc().args(args).env_remove("NO_COLOR").output().expect("netc runs");
        assert!(!out.status.success());
        String::from_utf8(out.stderr).expect("UTF-8")
    };
    // Piped (as here): plain, the same text as the snapshot.
    let plain = stderr(&["check", case]);
    assert!(!plain.contains('\x1b'), "{plain}");
    assert_eq!(plain, std::fs::read_to_string("tests/diagnostics/unknown_op.stderr").unwrap());
    assert_eq!(stderr(&["--color", "never", "check", case]), plain);
    let coloured = stderr(&["check", "--color", "always", case]);
    assert!(coloured.contains("\x1b["), "{coloured}");
    // Without the escapes it is the same text.
    let mut stripped = String::new();
    let mut rest = coloured.as_str();
    while let Some(i) = rest.find('\x1b') {
        stripped.push_str(&rest[..i]);
        rest = &rest[i..];
        rest = &rest[rest.find('m').map_or(rest.len(), |m| m + 1)..];
    }
    stripped.push_str(rest);
    assert_eq!(stripped, plain);
}

#[test]
fn independent_errors_are_all_reported_and_their_consequences_are_not() {
    let d =
        netc_compiler::compile_file(Path::new("tests/diagnostics/several_errors.net"), &Default::default())
            .expect_err("several_errors.net has errors");
    let kinds: Vec<ErrorKind> = std::iter::once(d.kind).chain(d.more.iter().map(|m| m.kind)).collect();
    assert_eq!(kinds, [ErrorKind::UnknownName, ErrorKind::Arity, ErrorKind::Type]);
}
