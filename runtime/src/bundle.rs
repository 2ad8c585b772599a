//! Compiled bundles (`.netc`): one file holding the optimised plan and the weights already in the
//! kernels' layouts, loaded by memory-mapping it; weights are used in place, never copied.
//!
//! Layout (all integers little-endian):
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `NETCBNDL` |
//! | 8 | 4 | format version ([`OLDEST_VERSION`]..=[`FORMAT_VERSION`]) |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | manifest length M |
//! | 24 | 8 | data length D |
//! | 32 | 8 | CRC-32 (zero-extended) of every byte from 64 to the end |
//! | 40 | 24 | reserved, 0 |
//! | 64 | M | manifest: JSON with the program and the blob table `{"blobs": {name: [offset, len]}, ...}` |
//! | 64 + M rounded up to 64 | D | data: f32 blobs, each starting at a multiple of 64 bytes |
//!
//! A bundle from another format version, a truncated file, or any flipped byte (checksum) is refused
//! with an error naming the file.
//!
//! ## The program in a bundle
//! [`write_program`] stores a [`Program`] as its optimised graph (the steps are rebuilt from it on
//! load, deterministically), the step table (name, algorithm, weight blobs) to check that
//! rebuild against, the packed-layout tag ([`PACKED_LAYOUT`]), and each step's packed weights as
//! blobs `k{step}.{buffer}`. The layout is the same for every ISA, so a bundle compiled on an
//! AVX-512 machine runs unchanged (no repacking) on an AVX2 or SSE one; the manifest records the
//! compiling host's ISA for information only. [`Bundle::program`] and [`Bundle::weights`] read it
//! back; any inconsistency is an error naming the file.

mod inspect;

pub use inspect::{inspect, Inspection};

use memmap2::Mmap;
use netc_compiler::codegen::{AlignedF32, Isa};
use netc_compiler::ir::serial::SerialGraph;
use netc_compiler::ir::Op;
use netc_compiler::lower::{Program, PACKED_LAYOUT};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"NETCBNDL";
/// The newest format version, which this netc writes and reads.
/// - Version 2: ISA-independent packed layouts (conv panels of 12 channels), the step table.
/// - Version 3: fused convolutions may scale their input by run-time channel factors
///   (`FusedConv::channel_scale`), a field a version-2 reader would ignore, computing something
///   else. A program without such a convolution is still written as version 2, so earlier netc
///   versions keep reading it.
pub const FORMAT_VERSION: u32 = CHANNEL_SCALE_VERSION;
/// The version that introduced `FusedConv::channel_scale`.
const CHANNEL_SCALE_VERSION: u32 = 3;
/// The oldest format version this netc reads.
pub const OLDEST_VERSION: u32 = 2;

/// Whether this netc reads bundles of format `version`.
pub fn reads_version(version: u32) -> bool {
    (OLDEST_VERSION..=FORMAT_VERSION).contains(&version)
}
const HEADER: usize = 64;
const ALIGN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {what}")]
    Program { path: PathBuf, what: String },
    /// The OS error is part of the message, not a `source()`: printed once by chain printers.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: not a netc bundle (bad magic bytes)")]
    BadMagic { path: PathBuf },
    #[error("{path}: bundle format version {found}, but this netc reads versions {OLDEST_VERSION} to {FORMAT_VERSION}; recompile it with `netc compile`")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: truncated: the header promises {expected} bytes, the file has {found}")]
    Truncated { path: PathBuf, expected: u64, found: u64 },
    #[error("{path}: corrupted: checksum {found:#010x} does not match the stored {expected:#010x}")]
    Checksum { path: PathBuf, expected: u32, found: u32 },
    #[error("{path}: bad header: {what}")]
    Header { path: PathBuf, what: String },
    #[error("{path}: bad manifest: {what}")]
    Manifest { path: PathBuf, what: String },
    #[error("{path}: blob `{name}` lies outside the data section or is misaligned")]
    Blob { path: PathBuf, name: String },
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Writes a bundle of the newest format version atomically (a temporary file in the same
/// directory, renamed when complete). `manifest` is any JSON object; the blob table is added to it
/// under `"blobs"`.
pub fn write(
    path: &Path,
    manifest: serde_json::Value,
    blobs: &[(String, &[f32])],
) -> Result<(), BundleError> {
    write_version(path, FORMAT_VERSION, manifest, blobs)
}

/// [`write`] with the format version `version` in the header.
fn write_version(
    path: &Path,
    version: u32,
    mut manifest: serde_json::Value,
    blobs: &[(String, &[f32])],
) -> Result<(), BundleError> {
    let io = |error| BundleError::Io { path: path.to_path_buf(), error };
    let mut table = BTreeMap::new();
    let mut offset = 0usize;
    for (name, data) in blobs {
        table.insert(name.clone(), (offset, data.len()));
        offset = round_up(offset + data.len() * 4);
    }
    let data_len = offset;
    manifest["blobs"] = serde_json::to_value(&table).expect("plain numbers");
    let manifest = serde_json::to_vec(&manifest).expect("JSON values serialise");
    let mut body = Vec::with_capacity(round_up(manifest.len()) + data_len);
    body.extend_from_slice(&manifest);
    body.resize(round_up(manifest.len()), 0);
    for (name, data) in blobs {
        let start = round_up(manifest.len()) + table[name].0;
        body.resize(start, 0);
        for v in data.iter() {
            body.extend_from_slice(&v.to_le_bytes());
        }
    }
    body.resize(round_up(manifest.len()) + data_len, 0);
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    header[16..24].copy_from_slice(&(manifest.len() as u64).to_le_bytes());
    header[24..32].copy_from_slice(&(data_len as u64).to_le_bytes());
    header[32..40].copy_from_slice(&u64::from(crc32fast::hash(&body)).to_le_bytes());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(&header).map_err(io)?;
    tmp.write_all(&body).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The name of the `j`-th weight buffer of step `k` in a bundle.
pub fn blob_name(k: usize, j: usize) -> String {
    format!("k{k}.{j}")
}

/// Writes `program` and its packed weights (`packed[k]`: the buffers of step `k`, as
/// [`Program::pack`] makes them) as a bundle, atomically.
pub fn write_program(path: &Path, program: &Program, packed: &[Vec<AlignedF32>]) -> Result<(), BundleError> {
    write_proved_program(path, program, packed, &[])
}

/// [`write_program`], recording that every kernel was proved in bounds for the ISAs `proved` (by
/// `netc_compiler::codegen::jit::check_program`); loaders skip the proof for those ISAs.
pub fn write_proved_program(
    path: &Path,
    program: &Program,
    packed: &[Vec<AlignedF32>],
    proved: &[Isa],
) -> Result<(), BundleError> {
    let provenance = Provenance { proved: proved.to_vec(), ..Provenance::default() };
    write_program_with(path, program, packed, &provenance)
}

/// What a bundle records about how it was made, beside its program (for loaders and `netc info`).
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The ISAs every kernel was proved in bounds for (loaders skip the proof for them).
    pub proved: Vec<Isa>,
    /// The ISA the optimiser's cost models planned layer choices for, if one was asked for.
    pub tuned_for: Option<Isa>,
    /// The metadata of the weight file the bundle was packed from (safetensors `__metadata__`;
    /// `netc init` marks random weights there).
    pub weights_metadata: BTreeMap<String, String>,
}

/// [`write_program`] with its [`Provenance`] recorded in the manifest.
pub fn write_program_with(
    path: &Path,
    program: &Program,
    packed: &[Vec<AlignedF32>],
    provenance: &Provenance,
) -> Result<(), BundleError> {
    let proved = &provenance.proved;
    let program_err = |what: String| BundleError::Program { path: path.to_path_buf(), what };
    if packed.len() != program.steps().len() {
        return Err(program_err(format!("{} steps but weights for {}", program.steps().len(), packed.len())));
    }
    let graph = program.graph();
    let steps: Vec<serde_json::Value> = program
        .steps()
        .iter()
        .enumerate()
        .map(|(k, step)| {
            serde_json::json!({
                "name": step.name,
                "algorithm": step.kernel.algorithm(),
                "weights": (0..step.weights.len()).map(|j| blob_name(k, j)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "netc_version": env!("CARGO_PKG_VERSION"),
        "model": graph.name,
        "packed_layout": PACKED_LAYOUT,
        "packed_on": Isa::best().map_or("unknown", |i| i.name()),
        "bounds_proved": proved.iter().map(|i| i.name()).collect::<Vec<_>>(),
        "tuned_for": provenance.tuned_for.map(Isa::name),
        "weights_metadata": provenance.weights_metadata,
        "graph": SerialGraph::from_graph(graph),
        "steps": steps,
    });
    let mut blobs = Vec::new();
    for (k, buffers) in packed.iter().enumerate() {
        for (j, b) in buffers.iter().enumerate() {
            blobs.push((blob_name(k, j), b.as_slice()));
        }
    }
    write_version(path, version_for(graph), manifest, &blobs)
}

/// The oldest format version that has every feature `graph` uses: [`CHANNEL_SCALE_VERSION`] with a
/// channel-scaled convolution, [`OLDEST_VERSION`] otherwise.
fn version_for(graph: &netc_compiler::ir::Graph) -> u32 {
    let scales = graph.node_ids().any(|id| matches!(&graph.node(id).op, Op::FusedConv(f) if f.channel_scale));
    if scales {
        CHANNEL_SCALE_VERSION
    } else {
        OLDEST_VERSION
    }
}

/// An opened, verified bundle.
pub struct Bundle {
    path: PathBuf,
    map: Mmap,
    manifest: serde_json::Value,
    data_start: usize,
    blobs: BTreeMap<String, (usize, usize)>,
}

impl Bundle {
    /// Maps the file and checks magic, version, lengths, checksum and the blob table.
    ///
    /// # Safety boundary
    /// The one `unsafe` operation is the memory mapping (see the SAFETY note inside).
    #[allow(unsafe_code)]
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let err_path = || path.to_path_buf();
        netc_compiler::files::regular_file_len(path)
            .map_err(|error| BundleError::Io { path: err_path(), error })?;
        let file = std::fs::File::open(path).map_err(|error| BundleError::Io { path: err_path(), error })?;
        let len = file.metadata().map_err(|error| BundleError::Io { path: err_path(), error })?.len();
        if len < MAGIC.len() as u64 {
            // Too short to tell what it is (an empty file cannot even be mapped).
            return Err(BundleError::Truncated { path: err_path(), expected: HEADER as u64, found: len });
        }
        // SAFETY: the mapping is read-only and private to this process; netc never writes to a bundle
        // it has open. A concurrent external modification of the file is outside what any reader of
        // a mapped file can defend against, and the checksum below is verified after mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(|error| BundleError::Io { path: err_path(), error })?;
        Bundle::from_map(path, map)
    }

    /// A bundle from bytes in memory (copied into an anonymous mapping, so blobs keep the
    /// alignment of a mapped file); `label` names it in errors. For tests and fuzzing.
    pub fn from_bytes(label: &Path, bytes: &[u8]) -> Result<Bundle, BundleError> {
        let io = |error| BundleError::Io { path: label.to_path_buf(), error };
        if bytes.len() < MAGIC.len() {
            return Err(BundleError::Truncated {
                path: label.to_path_buf(),
                expected: HEADER as u64,
                found: bytes.len() as u64,
            });
        }
        let mut map = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
        map.copy_from_slice(bytes);
        Bundle::from_map(label, map.make_read_only().map_err(io)?)
    }

    /// Checks a mapped bundle (at least [`MAGIC`]'s length).
    fn from_map(path: &Path, map: Mmap) -> Result<Bundle, BundleError> {
        let err_path = || path.to_path_buf();
        let len = map.len() as u64;
        if &map[..8] != MAGIC {
            return Err(BundleError::BadMagic { path: err_path() });
        }
        if len < HEADER as u64 {
            return Err(BundleError::Truncated { path: err_path(), expected: HEADER as u64, found: len });
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if !reads_version(version) {
            return Err(BundleError::Version { path: err_path(), found: version });
        }
        // Reserved bytes (and the checksum's upper half) are zero in every bundle this version
        // writes; anything else is a damaged or foreign file.
        if let Some(at) = (12..16).chain(36..HEADER).find(|&i| map[i] != 0) {
            return Err(BundleError::Header {
                path: err_path(),
                what: format!("reserved byte {at} is not zero"),
            });
        }
        let (manifest_len, data_len, checksum) = (u64_at(16), u64_at(24), u64_at(32));
        let expected = (manifest_len.div_ceil(ALIGN as u64) * ALIGN as u64)
            .checked_add(data_len)
            .and_then(|n| n.checked_add(HEADER as u64))
            .ok_or_else(|| BundleError::Manifest {
                path: err_path(),
                what: "section lengths overflow".into(),
            })?;
        if expected != len {
            return Err(BundleError::Truncated { path: err_path(), expected, found: len });
        }
        let found = crc32fast::hash(&map[HEADER..]);
        if u64::from(found) != checksum {
            return Err(BundleError::Checksum { path: err_path(), expected: checksum as u32, found });
        }
        let manifest_len = manifest_len as usize;
        let manifest: serde_json::Value = serde_json::from_slice(&map[HEADER..HEADER + manifest_len])
            .map_err(|e| BundleError::Manifest { path: err_path(), what: e.to_string() })?;
        let blobs: BTreeMap<String, (usize, usize)> = serde_json::from_value(manifest["blobs"].clone())
            .map_err(|e| BundleError::Manifest { path: err_path(), what: format!("blob table: {e}") })?;
        let data_start = HEADER + round_up(manifest_len);
        for (name, &(offset, count)) in &blobs {
            let end = count.checked_mul(4).and_then(|b| b.checked_add(offset));
            if offset % ALIGN != 0 || end.is_none_or(|e| e > data_len as usize) {
                return Err(BundleError::Blob { path: err_path(), name: name.clone() });
            }
        }
        Ok(Bundle { path: path.to_path_buf(), map, manifest, data_start, blobs })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The manifest (plan and metadata).
    pub fn manifest(&self) -> &serde_json::Value {
        &self.manifest
    }

    /// Whether `netc compile` proved every kernel in bounds for the ISA `choice` resolves to on
    /// this machine.
    pub fn bounds_proved(&self, choice: netc_compiler::codegen::IsaChoice) -> bool {
        choice.resolve().is_ok_and(|isa| self.bounds_proved_for(isa))
    }

    /// Whether `netc compile` proved every kernel in bounds for `isa` when it wrote the bundle.
    pub fn bounds_proved_for(&self, isa: Isa) -> bool {
        self.manifest["bounds_proved"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(isa.name())))
    }

    /// The metadata of the weight file the bundle was packed from (see [`Provenance`]); empty
    /// for bundles that record none.
    pub fn weights_metadata(&self) -> BTreeMap<String, String> {
        serde_json::from_value(self.manifest["weights_metadata"].clone()).unwrap_or_default()
    }

    /// A blob's floats, read in place from the mapping.
    pub fn blob(&self, name: &str) -> Option<&[f32]> {
        let &(offset, count) = self.blobs.get(name)?;
        let bytes = &self.map[self.data_start + offset..][..count * 4];
        // The mapping is page aligned and blobs start at multiples of 64 bytes (checked in `open`),
        // so the cast never fails.
        Some(bytemuck::cast_slice(bytes))
    }

    pub fn blob_names(&self) -> impl Iterator<Item = &str> {
        self.blobs.keys().map(String::as_str)
    }

    fn program_err(&self, what: impl Into<String>) -> BundleError {
        BundleError::Program { path: self.path.clone(), what: what.into() }
    }

    /// The program stored by [`write_program`]: the graph, lowered again, checked against the
    /// stored step table.
    pub fn program(&self) -> Result<Program, BundleError> {
        let layout = self.manifest["packed_layout"].as_str().unwrap_or("(none)");
        if layout != PACKED_LAYOUT {
            return Err(self.program_err(format!(
                "weights packed in layout `{layout}`, but this netc reads `{PACKED_LAYOUT}`; recompile it with `netc compile`"
            )));
        }
        let serial: SerialGraph = serde_json::from_value(self.manifest["graph"].clone())
            .map_err(|e| self.program_err(format!("the bundle's graph cannot be read: {e}")))?;
        let graph =
            serial.to_graph().map_err(|e| self.program_err(format!("the bundle's graph is invalid: {e}")))?;
        let program = Program::new(graph)
            .map_err(|e| self.program_err(format!("the bundle's graph cannot run: {e}")))?;
        let stored = self.manifest["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
        if stored.len() != program.steps().len() {
            return Err(self.program_err(format!(
                "the step table lists {} kernels, the graph has {}",
                stored.len(),
                program.steps().len()
            )));
        }
        for (k, (step, s)) in program.steps().iter().zip(stored).enumerate() {
            if s["name"].as_str() != Some(step.name.as_str()) {
                return Err(self.program_err(format!(
                    "step {k} is `{}` in the step table but `{}` in the graph",
                    s["name"].as_str().unwrap_or("?"),
                    step.name
                )));
            }
        }
        Ok(program)
    }

    /// Each step's packed weight buffers, read in place (checked against the lengths the step's
    /// kernel takes).
    pub fn weights(&self, program: &Program) -> Result<Vec<Vec<&[f32]>>, BundleError> {
        Ok(self
            .weight_spans(program)?
            .into_iter()
            .map(|spans| spans.into_iter().map(|span| self.floats(span)).collect())
            .collect())
    }

    /// Where each step's packed weight buffers lie in the mapping (checked against the lengths
    /// the step's kernel takes); [`Bundle::floats`] reads them.
    pub fn weight_spans(&self, program: &Program) -> Result<Vec<Vec<BlobSpan>>, BundleError> {
        program
            .steps()
            .iter()
            .enumerate()
            .map(|(k, step)| {
                step.weights
                    .iter()
                    .enumerate()
                    .map(|(j, &(what, len))| {
                        let name = blob_name(k, j);
                        let &(offset, count) = self.blobs.get(&name).ok_or_else(|| {
                            self.program_err(format!("weight blob {name} of `{}` is missing", step.name))
                        })?;
                        if count != len {
                            return Err(self.program_err(format!(
                                "weight blob {name} of `{}` ({what}) holds {count} floats, the kernel takes {len}",
                                step.name
                            )));
                        }
                        Ok(BlobSpan { start: self.data_start + offset, count })
                    })
                    .collect()
            })
            .collect()
    }

    /// The floats of a span of this bundle (from [`Bundle::weight_spans`]).
    ///
    /// Panics if the span does not lie in the mapping (spans come from this bundle's checked
    /// blob table).
    pub fn floats(&self, span: BlobSpan) -> &[f32] {
        // The mapping is page aligned and blobs start at multiples of 64 bytes (checked in `open`),
        // so the cast never fails.
        bytemuck::cast_slice(&self.map[span.start..][..span.count * 4])
    }
}

/// A blob's place in a bundle's mapping: its first byte and its number of floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobSpan {
    start: usize,
    count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("m.netc");
        let a = [1.0f32, 2.0, 3.0];
        let b = [-1.5f32; 17];
        write(&path, serde_json::json!({"model": "m"}), &[("a".into(), &a[..]), ("b".into(), &b[..])])
            .unwrap();
        path
    }

    #[test]
    fn blobs_come_back_in_place_and_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Bundle::open(&sample(dir.path())).unwrap();
        assert_eq!(bundle.manifest()["model"], "m");
        assert_eq!(bundle.blob("a").unwrap(), [1.0, 2.0, 3.0]);
        assert_eq!(bundle.blob("b").unwrap(), [-1.5; 17]);
        assert_eq!(bundle.blob("b").unwrap().as_ptr() as usize % 64, 0);
        assert!(bundle.blob("c").is_none());
    }

    #[test]
    fn inspection_describes_a_bundle_and_its_damage_without_refusing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let sound = inspect(&path).unwrap();
        assert!(sound.checksum_ok() && sound.length_ok());
        assert_eq!(sound.version, FORMAT_VERSION);
        assert_eq!(sound.manifest.unwrap()["model"], "m");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 70;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let damaged = inspect(&path).unwrap();
        assert!(!damaged.checksum_ok() && damaged.length_ok());
        for short in [&b"NETCBNDL"[..], b"NETC", b""] {
            std::fs::write(&path, short).unwrap();
            assert!(matches!(inspect(&path), Err(BundleError::Truncated { .. })));
        }
        std::fs::write(&path, b"network n(x: [1]) { x }").unwrap();
        assert!(matches!(inspect(&path), Err(BundleError::BadMagic { .. })));
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 70;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(Bundle::open(&path), Err(BundleError::Checksum { .. })));
    }

    #[test]
    fn truncation_other_versions_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(Bundle::open(&path), Err(BundleError::Truncated { .. })));
        let mut v1 = bytes.clone();
        v1[8] = 1;
        std::fs::write(&path, &v1).unwrap();
        let err = Bundle::open(&path).err().unwrap();
        assert!(err.to_string().contains("format version 1"), "{err}");
        // A newer format than this netc knows.
        let mut newer = bytes.clone();
        newer[8] = (FORMAT_VERSION + 1) as u8;
        std::fs::write(&path, &newer).unwrap();
        let err = Bundle::open(&path).err().unwrap();
        assert!(err.to_string().contains(&format!("format version {}", FORMAT_VERSION + 1)), "{err}");
        std::fs::write(&path, b"PK\x03\x04 not a bundle at all, just some other file....................")
            .unwrap();
        assert!(matches!(Bundle::open(&path), Err(BundleError::BadMagic { .. })));
        let mut reserved = bytes.clone();
        reserved[50] = 7;
        std::fs::write(&path, &reserved).unwrap();
        let err = Bundle::open(&path).err().unwrap();
        assert!(err.to_string().ends_with("bad header: reserved byte 50 is not zero"), "{err}");
        std::fs::write(&path, b"NETC").unwrap();
        assert!(matches!(Bundle::open(&path), Err(BundleError::Truncated { .. })));
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(Bundle::open(&path), Err(BundleError::Truncated { .. })));
    }
}
