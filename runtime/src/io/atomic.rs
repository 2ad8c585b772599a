//! Atomic file output: write into a temporary file in the destination's directory, then rename it
//! over the destination. Readers never see a partial file, and a failed write leaves nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {detail}", .path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub detail: String,
}

/// The directory a file would be created in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Checks, before any long computation, that `path` can plausibly be written: its directory exists
/// and `path` is not a directory.
pub fn check_writable(path: &Path) -> Result<(), WriteError> {
    let fail = |detail: String| WriteError { path: path.to_path_buf(), detail };
    let dir = parent_dir(path);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail(format!("{} is not a directory", dir.display()))),
        Err(e) => return Err(fail(format!("directory {}: {e}", dir.display()))),
    }
    if path.is_dir() {
        return Err(fail("it is a directory".to_string()));
    }
    Ok(())
}

/// Writes `path` atomically with `write`, which receives a buffered writer on the temporary file.
pub fn write_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    let fail = |detail: String| WriteError { path: path.to_path_buf(), detail };
    let dir = parent_dir(path);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".netc-").suffix(".tmp");
    // Temporary files are private (0600) by default; the output should get the usual permissions,
    // 0666 minus the umask, like any file the user creates.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| fail(format!("cannot create a temporary file in {}: {e}", dir.display())))?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut out).and_then(|()| out.flush()).map_err(|e| fail(e.to_string()))?;
    }
    tmp.persist(path).map_err(|e| fail(e.error.to_string()))?;
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_with(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let err = write_with(&target, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("out.bin") && err.to_string().contains("disk on fire"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_bytes(&target, b"whole").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
    }

    #[test]
    fn renaming_onto_a_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub");
        std::fs::create_dir(&target).unwrap();
        assert!(check_writable(&target).is_err());
        assert!(write_bytes(&target, b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(check_writable(&dir.path().join("missing/out.npy")).is_err());
    }
}
