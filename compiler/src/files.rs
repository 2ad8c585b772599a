//! Guards every loader applies before reading a file: it must be a regular file (a FIFO would block
//! an `open`, a character device such as `/dev/zero` would be read forever), and reads are capped
//! at what the caller expects such a file to hold.

use std::io::{Error, ErrorKind, Read as _};
use std::path::Path;

/// The most bytes a `.net` source may have (the seed models are a few KiB).
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// The length of `path` if it is a regular file (symbolic links followed), else an error saying
/// what it is instead. Nothing is opened, so a FIFO cannot block.
pub fn regular_file_len(path: &Path) -> Result<u64, Error> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    Err(Error::new(ErrorKind::InvalidInput, format!("it is {}, not a regular file", kind_of(&meta))))
}

/// Reads a regular file of at most `cap` bytes whole.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, Error> {
    let len = regular_file_len(path)?;
    if len > cap {
        return Err(too_large(len, cap));
    }
    let mut bytes = Vec::new();
    // `take`: a file that grows while being read still stops at the cap.
    std::fs::File::open(path)?.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_large(bytes.len() as u64, cap));
    }
    Ok(bytes)
}

fn too_large(len: u64, cap: u64) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        format!("it holds {len} bytes, more than the {cap} this kind of file may have"),
    )
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_devices_are_refused_and_caps_hold() {
        let dir = std::env::temp_dir();
        let err = regular_file_len(&dir).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        #[cfg(unix)]
        {
            let err = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err();
            assert!(err.to_string().contains("a character device"), "{err}");
        }
        let f = tempfile_path("netc-files-test");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_capped(&f, 10).unwrap(), b"0123456789");
        assert!(read_capped(&f, 9).unwrap_err().to_string().contains("holds 10 bytes"));
        let _ = std::fs::remove_file(&f);
    }

    fn tempfile_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{name}-{}", std::process::id()))
    }
}
