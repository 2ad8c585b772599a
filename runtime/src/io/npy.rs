//! `.npy` files of f32 (`'<f4'`, C order), read and written with the `npyz` crate.

use super::atomic;
use crate::tensor::{element_count, Dims, Tensor};
use npyz::WriterBuilder;
use std::path::{Path, PathBuf};

/// Why a `.npy` file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The OS error is part of the message, not a `source()`: printed once by chain printers.
    #[error("cannot read {}: {error}", .path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{}: not a valid .npy file: {detail}", .path.display())]
    Format { path: PathBuf, detail: String },
    #[error("{}: the array has dtype `{dtype}`; netc reads float32 arrays (numpy: `x.astype(np.float32)`)", .path.display())]
    Dtype { path: PathBuf, dtype: String },
    #[error("{}: the array is in Fortran order; save a C-ordered array (numpy: `np.ascontiguousarray(x)`)", .path.display())]
    FortranOrder { path: PathBuf },
    #[error(transparent)]
    Write(#[from] atomic::WriteError),
}

/// Reads a float32 `.npy` file into a tensor of the stored shape.
pub fn read(path: &Path) -> Result<Tensor, NpyError> {
    // Regular files only; the header's shape must then account for the whole length.
    let bytes = netc_compiler::files::read_capped(path, u64::MAX)
        .map_err(|error| NpyError::Io { path: path.to_path_buf(), error })?;
    from_bytes(path, &bytes)
}

/// Parses the bytes of a `.npy` file (`path` names it in errors).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Tensor, NpyError> {
    let format = |detail: String| NpyError::Format { path: path.to_path_buf(), detail };
    check_header_length(bytes).map_err(format)?;
    let file = npyz::NpyFile::new(bytes).map_err(|e| format(e.to_string()))?;
    let dtype = match file.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => other.descr().to_string(),
    };
    if !matches!(dtype.as_str(), "<f4" | ">f4") {
        return Err(NpyError::Dtype { path: path.to_path_buf(), dtype });
    }
    if file.order() == npyz::Order::Fortran {
        return Err(NpyError::FortranOrder { path: path.to_path_buf() });
    }
    let shape: Vec<usize> = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format(format!("dimension {d} is too large"))))
        .collect::<Result<_, _>>()?;
    let n = element_count(&shape).ok_or_else(|| format(format!("shape {shape:?} overflows")))?;
    // The header could claim any size: check it against the bytes present before allocating.
    if n.checked_mul(4).is_none_or(|b| b > bytes.len()) {
        return Err(format(format!(
            "the header declares {} values of shape {}, but the file has only {} bytes",
            n,
            Dims(&shape),
            bytes.len()
        )));
    }
    let data: Vec<f32> = file.into_vec().map_err(|e| format(format!("data: {e}")))?;
    Tensor::new(shape, data).map_err(|e| format(e.to_string()))
}

/// Checks that the header length a `.npy` file declares fits in the file, before the parser
/// allocates a buffer of that length (a corrupt length field would ask for gigabytes).
fn check_header_length(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err("no .npy magic bytes".into());
    }
    let (prefix, declared) = match bytes[6] {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 if bytes.len() >= 12 => {
            (12, u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize)
        }
        2 | 3 => return Err("the header is cut short".into()),
        v => return Err(format!("format version {v} (netc reads versions 1 to 3)")),
    };
    if prefix + declared > bytes.len() {
        return Err(format!("the header declares {declared} bytes, but the file has only {}", bytes.len()));
    }
    check_header_tokens(&bytes[prefix..prefix + declared])
}

/// Checks, in one linear pass, that a header is the plain dictionary numpy writes:
/// `{'key': value, ...}` with string, `True`/`False` or integer-tuple values, padded with spaces and
/// a newline. The parser behind `npyz` backtracks exponentially on malformed input (nested braces,
/// odd number literals: found by fuzzing); only headers of this shape reach it.
fn check_header_tokens(header: &[u8]) -> Result<(), String> {
    let mut p = HeaderScan { bytes: header, at: 0 };
    p.dictionary().map_err(|at| format!("unsupported header syntax at byte {at}"))
}

/// A cursor over a `.npy` header; errors are byte offsets.
struct HeaderScan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl HeaderScan<'_> {
    fn spaces(&mut self) {
        while self.bytes.get(self.at).is_some_and(|&c| c == b' ' || c == b'\n') {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.spaces();
        let hit = self.bytes.get(self.at) == Some(&c);
        self.at += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), usize> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.at)
        }
    }

    fn dictionary(&mut self) -> Result<(), usize> {
        self.expect(b'{')?;
        while !self.eat(b'}') {
            self.string()?;
            self.expect(b':')?;
            self.value()?;
            if !self.eat(b',') {
                self.expect(b'}')?;
                break;
            }
        }
        self.spaces();
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(self.at)
        }
    }

    fn value(&mut self) -> Result<(), usize> {
        self.spaces();
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        if rest.starts_with(b"True") {
            self.at += 4;
            Ok(())
        } else if rest.starts_with(b"False") {
            self.at += 5;
            Ok(())
        } else if rest.first() == Some(&b'\'') {
            self.string()
        } else {
            self.expect(b'(')?;
            while !self.eat(b')') {
                self.integer()?;
                if !self.eat(b',') {
                    self.expect(b')')?;
                    break;
                }
            }
            Ok(())
        }
    }

    fn string(&mut self) -> Result<(), usize> {
        self.expect(b'\'')?;
        let len = self.bytes[self.at..].iter().position(|&c| c == b'\'').ok_or(self.at)?;
        let body = &self.bytes[self.at..self.at + len];
        if len > 64 || !body.iter().all(|c| c.is_ascii_graphic() && *c != b'\\' || *c == b' ') {
            return Err(self.at);
        }
        self.at += len + 1;
        Ok(())
    }

    fn integer(&mut self) -> Result<(), usize> {
        self.spaces();
        let len = self.bytes[self.at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 || len > 20 {
            return Err(self.at);
        }
        self.at += len;
        Ok(())
    }
}

/// The bytes of a float32 `.npy` file holding `t`.
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + t.data.len() * 4);
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let write = |out: &mut Vec<u8>| -> std::io::Result<()> {
        let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(&shape).writer(out).begin_nd()?;
        w.extend(t.data.iter().copied())?;
        w.finish()
    };
    write(&mut out).expect("writing to memory cannot fail");
    out
}

/// Writes `t` as a float32 `.npy` file, atomically.
pub fn write(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    Ok(atomic::write_bytes(path, &to_bytes(t))?)
}

/// Writes a float32 `.npy` file of `shape` atomically, its values read from `values` as
/// little-endian f32 bytes in order (for arrays assembled piecewise on disk, not in memory).
pub fn write_from(path: &Path, shape: &[usize], values: &mut dyn std::io::Read) -> Result<(), NpyError> {
    use std::io::Read as _;
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let count: usize = shape.iter().product();
    let mut values = std::io::BufReader::new(values);
    atomic::write_with(path, |out| {
        let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(&dims).writer(out).begin_nd()?;
        let mut bytes = [0u8; 4];
        for _ in 0..count {
            values.read_exact(&mut bytes)?;
            w.push(&f32::from_le_bytes(bytes))?;
        }
        w.finish()
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_arrays_read_from_a_stream() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::new(vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-8, 7.0]).unwrap();
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = dir.path().join("t.npy");
        write_from(&path, &[2, 3], &mut &bytes[..]).unwrap();
        assert_eq!(read(&path).unwrap(), t);
        // Too few values: an error, and no file.
        let short = dir.path().join("short.npy");
        assert!(write_from(&short, &[3, 3], &mut &bytes[..]).is_err());
        assert!(!short.exists());
    }

    #[test]
    fn round_trips_through_bytes() {
        let t = Tensor::new(vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-8, 7.0]).unwrap();
        let bytes = to_bytes(&t);
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        assert_eq!(from_bytes(Path::new("t.npy"), &bytes).unwrap(), t);
    }

    #[test]
    fn rejects_other_dtypes_and_lying_headers() {
        let t = Tensor::new(vec![4], vec![1.0; 4]).unwrap();
        let mut bytes = to_bytes(&t);
        let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        let mut int32 = bytes.clone();
        int32[at + 1] = b'i';
        let err = from_bytes(Path::new("x.npy"), &int32).unwrap_err();
        assert!(matches!(err, NpyError::Dtype { .. }), "{err}");
        bytes.truncate(bytes.len() - 4);
        let err = from_bytes(Path::new("x.npy"), &bytes).unwrap_err();
        assert!(err.to_string().starts_with("x.npy: not a valid .npy file"), "{err}");
        let err = from_bytes(Path::new("x.npy"), b"not numpy at all").unwrap_err();
        assert!(matches!(err, NpyError::Format { .. }), "{err}");
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn only_plain_numpy_header_dictionaries_reach_the_parser() {
        let ok = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n";
        assert!(check_header_tokens(ok).is_ok());
        assert!(check_header_tokens(b"{'descr': '<f4', 'fortran_order': True, 'shape': (), }\n").is_ok());
        // Number syntax the backtracking parser chokes on, expressions, and overlong tokens.
        for bad in [
            &b"{'shape': (1.5e10e10e10e10,)}"[..],
            b"{'shape': (-1,)}",
            b"{'descr': '<f4' + 'x'}",
            b"{'shape': (123456789012345678901234,)}",
            b"{'descr': 'unterminated}",
            b"{'descr': '<i8', {{{{{{{{{{{{{{{{'fortran_order': False, 'shape': (5,), }",
            b"{'shape': ((5,),)}",
            b"{'descr': '<f4'} trailing",
        ] {
            assert!(check_header_tokens(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
