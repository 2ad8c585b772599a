//! Reading a bundle's header and manifest without trusting them, for `netc info`: unlike
//! [`Bundle::open`](super::Bundle::open), a damaged bundle is described (what its header says,
//! whether its checksum holds), not refused.

use super::{BundleError, ALIGN, HEADER, MAGIC};
use std::io::Read as _;
use std::path::Path;

/// What a bundle's header says and whether its contents agree with it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The format version in the header (this netc reads [`super::OLDEST_VERSION`] to [`super::FORMAT_VERSION`]).
    pub version: u32,
    /// The file's length in bytes.
    pub file_bytes: u64,
    /// The manifest's length, as the header states it.
    pub manifest_bytes: u64,
    /// The data section's length (packed weights, each blob padded to 64 bytes), as stated.
    pub data_bytes: u64,
    /// The CRC-32 the header stores (zero-extended to 64 bits).
    pub stored_checksum: u64,
    /// The CRC-32 of the file's bytes after the header.
    pub computed_checksum: u32,
    /// The manifest, when it lies inside the file and is JSON.
    pub manifest: Option<serde_json::Value>,
}

impl Inspection {
    /// The length the header's sections add up to.
    pub fn expected_bytes(&self) -> Option<u64> {
        self.manifest_bytes
            .checked_next_multiple_of(ALIGN as u64)?
            .checked_add(self.data_bytes)?
            .checked_add(HEADER as u64)
    }

    /// Whether the file has the length its header states.
    pub fn length_ok(&self) -> bool {
        self.expected_bytes() == Some(self.file_bytes)
    }

    /// Whether the stored checksum matches the contents.
    pub fn checksum_ok(&self) -> bool {
        self.stored_checksum == u64::from(self.computed_checksum)
    }
}

/// Reads `path`'s header, checksums the rest (streamed, never held whole in memory) and parses
/// the manifest where it can. Errors only when the file cannot be read, is not a bundle (magic)
/// or is shorter than a header.
pub fn inspect(path: &Path) -> Result<Inspection, BundleError> {
    let io = |error| BundleError::Io { path: path.to_path_buf(), error };
    let file_bytes = netc_compiler::files::regular_file_len(path).map_err(io)?;
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match file.read(&mut header[got..]).map_err(io)? {
            0 => break,
            n => got += n,
        }
    }
    if got >= MAGIC.len() && &header[..MAGIC.len()] != MAGIC {
        return Err(BundleError::BadMagic { path: path.to_path_buf() });
    }
    if got < HEADER {
        return Err(BundleError::Truncated {
            path: path.to_path_buf(),
            expected: HEADER as u64,
            found: got as u64,
        });
    }
    let u32_at = |o: usize| u32::from_le_bytes(header[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(header[o..o + 8].try_into().expect("8 bytes"));
    let manifest_bytes = u64_at(16);
    // The manifest is read only when it lies inside the file (a damaged length could claim more).
    let manifest_fits = manifest_bytes <= file_bytes.saturating_sub(HEADER as u64);
    let mut hasher = crc32fast::Hasher::new();
    let mut manifest = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
        let wanted = if manifest_fits { manifest_bytes as usize } else { 0 };
        if manifest.len() < wanted {
            let take = (wanted - manifest.len()).min(n);
            manifest.extend_from_slice(&chunk[..take]);
        }
    }
    Ok(Inspection {
        version: u32_at(8),
        file_bytes,
        manifest_bytes,
        data_bytes: u64_at(24),
        stored_checksum: u64_at(32),
        computed_checksum: hasher.finalize(),
        manifest: serde_json::from_slice(&manifest).ok(),
    })
}
