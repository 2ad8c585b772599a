//! `netc info M.netc`: what a compiled bundle holds and whether it is intact.

use anyhow::bail;
use netc_compiler::codegen::conv::{default_tile, ConvPath};
use netc_compiler::codegen::Isa;
use netc_compiler::lower::PACKED_LAYOUT;
use netc_runtime::bundle::{self, Bundle, Inspection, FORMAT_VERSION, OLDEST_VERSION};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Describe a compiled bundle (.netc) and verify its checksum.
///
/// Prints the format version, the netc that wrote it, the checksum status (verified: ok or
/// corrupt), the sizes of the file, its manifest and its packed weights, the packed layout and
/// the ISA (and register tile) of the machine that packed it, the ISA its layer choices were
/// tuned for, the ISAs whose kernels `netc compile` proved in bounds, the number of graph nodes
/// and kernels, the activation arena per image, and the metadata of the weights it was packed
/// from (weights from `netc init` are marked random). A damaged bundle is described as far as
/// its header allows, and the command exits 1.
///
/// Examples:
///   netc info resnet50.netc
///   netc info resnet50.netc --format json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The bundle (from `netc compile`).
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = args.file.as_path();
    if !super::inspect::is_bundle_file(path) {
        netc_compiler::files::regular_file_len(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        bail!(
            "{}: not a compiled bundle (bad magic bytes); `netc summary` describes .net sources",
            path.display()
        );
    }
    let inspection = bundle::inspect(path)?;
    let intact =
        bundle::reads_version(inspection.version) && inspection.length_ok() && inspection.checksum_ok();
    // The program is rebuilt only from an intact bundle; its failure is reported, not fatal.
    let program = intact.then(|| Bundle::open(path).and_then(|b| b.program()));
    let info = describe(path, &inspection, program.as_ref().and_then(|p| p.as_ref().ok()));
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&info)? + "\n",
        Format::Text => text(&info),
    };
    super::output::stdout(text.as_bytes())?;
    if let Some(Err(e)) = program {
        return Err(e.into());
    }
    if !bundle::reads_version(inspection.version) {
        bail!(
            "{}: bundle format version {}, but this netc reads versions {OLDEST_VERSION} to {FORMAT_VERSION}; recompile it with `netc compile`",
            path.display(),
            inspection.version
        );
    }
    if !inspection.length_ok() {
        let stated = inspection.expected_bytes().map_or("more than 2^64".into(), |n| n.to_string());
        bail!(
            "{}: truncated or damaged: its header states {stated} bytes, the file has {}",
            path.display(),
            inspection.file_bytes
        );
    }
    if !inspection.checksum_ok() {
        bail!("{}: corrupted: the checksum does not match; compile the bundle again", path.display());
    }
    Ok(())
}

/// Everything `info` reports, as JSON (the text form is rendered from it).
fn describe(path: &Path, ins: &Inspection, program: Option<&netc_compiler::lower::Program>) -> Value {
    let manifest = ins.manifest.as_ref().unwrap_or(&Value::Null);
    let blobs: Vec<u64> = manifest["blobs"]
        .as_object()
        .map(|b| b.values().filter_map(|v| v[1].as_u64()).collect())
        .unwrap_or_default();
    let packed_on = manifest["packed_on"].as_str().and_then(Isa::parse);
    json!({
        "path": path.display().to_string(),
        "format_version": ins.version,
        "reads_version": FORMAT_VERSION,
        "reads_oldest_version": OLDEST_VERSION,
        "netc_version": manifest["netc_version"],
        "model": manifest["model"],
        "checksum": {
            "ok": ins.checksum_ok(),
            "stored": format!("{:#010x}", ins.stored_checksum),
            "computed": format!("{:#010x}", ins.computed_checksum),
        },
        "length_ok": ins.length_ok(),
        "file_bytes": ins.file_bytes,
        "manifest_bytes": ins.manifest_bytes,
        "data_bytes": ins.data_bytes,
        "weights": { "blobs": blobs.len(), "floats": blobs.iter().sum::<u64>() },
        "packed_layout": manifest["packed_layout"],
        "packed_layout_current": manifest["packed_layout"].as_str() == Some(PACKED_LAYOUT),
        "packed_on": manifest["packed_on"],
        "tile": packed_on.map(tile),
        "tuned_for": manifest["tuned_for"],
        "bounds_proved": manifest["bounds_proved"],
        "nodes": program.map(|p| p.graph().node_count()),
        "kernels": program.map(|p| p.steps().len()),
        "arena_bytes_per_image": program.map(|p| p.plan().arena_bytes(1)),
        "weights_metadata": manifest["weights_metadata"],
    })
}

/// The register tile of the widest convolutions on `isa`, as `rows x columns` of floats.
fn tile(isa: Isa) -> String {
    let (rows, vectors) = default_tile(isa, ConvPath::Direct1x1, usize::MAX);
    format!("{rows}x{}", vectors * isa.lanes())
}

fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

/// `value` as text, or `unknown` when the manifest lacks it.
fn or_unknown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "unknown".into(),
        v => v.to_string(),
    }
}

/// The text form: one `name  value` line per fact.
fn text(info: &Value) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    let version = info["format_version"].as_u64().unwrap_or(0);
    let newest = info["reads_version"].as_u64().unwrap_or(0);
    let oldest = info["reads_oldest_version"].as_u64().unwrap_or(newest);
    lines.push((
        "format version",
        if (oldest..=newest).contains(&version) {
            format!("{version}")
        } else {
            format!("{version} (this netc reads {oldest} to {newest})")
        },
    ));
    lines.push(("written by", format!("netc {}", or_unknown(&info["netc_version"]))));
    let checksum = &info["checksum"];
    lines.push((
        "checksum",
        if checksum["ok"] == true {
            format!("ok (CRC-32 {})", or_unknown(&checksum["stored"]))
        } else {
            format!(
                "CORRUPT: stored {}, contents {}",
                or_unknown(&checksum["stored"]),
                or_unknown(&checksum["computed"])
            )
        },
    ));
    let file = info["file_bytes"].as_u64().unwrap_or(0);
    let size = format!(
        "{}: manifest {}, packed weights {}",
        mib(file),
        mib(info["manifest_bytes"].as_u64().unwrap_or(0)),
        mib(info["data_bytes"].as_u64().unwrap_or(0))
    );
    lines.push((
        "size",
        if info["length_ok"] == true {
            size
        } else {
            format!("{size}: TRUNCATED (the header states other lengths)")
        },
    ));
    let floats = info["weights"]["floats"].as_u64().unwrap_or(0);
    lines.push((
        "weights",
        format!(
            "{} floats in {} buffers{}",
            super::summary::thousands(floats),
            info["weights"]["blobs"],
            match netc_runtime::init::random_weights_note(
                &serde_json::from_value(info["weights_metadata"].clone()).unwrap_or_default()
            ) {
                Some(_) => ", random (from `netc init`): predictions are meaningless",
                None => "",
            }
        ),
    ));
    lines.push((
        "packed layout",
        format!(
            "{}{}",
            or_unknown(&info["packed_layout"]),
            if info["packed_layout_current"] == true {
                " (every ISA reads it)"
            } else {
                " (NOT this netc's layout)"
            }
        ),
    ));
    lines.push((
        "packed on",
        match info["tile"].as_str() {
            Some(tile) => format!("{} (register tile {tile})", or_unknown(&info["packed_on"])),
            None => or_unknown(&info["packed_on"]),
        },
    ));
    lines.push(("tuned for", or_unknown(&info["tuned_for"])));
    let proved: Vec<&str> = info["bounds_proved"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    lines.push((
        "bounds proved",
        if proved.is_empty() { "none (proved when loaded)".into() } else { proved.join(", ") },
    ));
    if let (Some(nodes), Some(kernels)) = (info["nodes"].as_u64(), info["kernels"].as_u64()) {
        lines.push(("graph", format!("{nodes} nodes, {kernels} kernels")));
    }
    if let Some(arena) = info["arena_bytes_per_image"].as_u64() {
        lines.push(("activations", format!("{} per image (static memory plan)", mib(arena))));
    }
    let mut out =
        format!("{}: netc bundle of model `{}`\n", or_unknown(&info["path"]), or_unknown(&info["model"]));
    for (name, value) in lines {
        out += &format!("  {name:<15} {value}\n");
    }
    out
}
