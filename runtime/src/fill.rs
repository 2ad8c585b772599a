//! "netc-fill v1": the tiny deterministic generator that both netc's tests and the PyTorch golden
//! script (`tests/golden/pytorch/make_golden.py`) use to fill every weight tensor and the test input.
//!
//! The values of a tensor depend only on its state_dict key and element index, so the Rust side
//! regenerates exactly the weights PyTorch used without shipping any weight file:
//!
//! * `seed = FNV-1a 64(key)`;
//! * element `i`: SplitMix64's finaliser of `seed + (i + 1) * 0x9E3779B97F4A7C15`, keep the top 24
//!   bits, `u = bits / 2^24` in `[0, 1)`;
//! * `value = f32(lo + (hi - lo) * u)`, computed in f64 and rounded once.
//!
//! The range comes from the key's suffix and the tensor's rank ([`range_for`]).

/// Why a key has no netc-fill range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("netc-fill v1 has no range for tensor `{key}` of shape {shape:?}")]
pub struct FillError {
    pub key: String,
    pub shape: Vec<usize>,
}

/// FNV-1a, 64 bit, of the key's UTF-8 bytes.
pub fn fnv1a64(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The `i`-th (0-based) unit value of the stream `seed`: 24 random bits scaled to `[0, 1)`.
pub fn unit(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f64 / 16_777_216.0
}

/// `n` values uniform in `[lo, hi)` for `key`: element `i` is `f32(lo + (hi - lo) * unit(seed, i))`.
pub fn uniform(key: &str, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    let seed = fnv1a64(key);
    let span = hi - lo;
    (0..n as u64).map(|i| (lo + span * unit(seed, i)) as f32).collect()
}

/// The range netc-fill v1 uses for a state_dict tensor, or `Ok(None)` for `num_batches_tracked`
/// (left untouched):
/// `*.weight` of rank >= 2: `±sqrt(6 / prod(shape[1..]))`; `*.weight` of rank 1: `[0.5, 1.5]`;
/// `*.bias`: `[-0.2, 0.2]`; `*.running_mean`: `[-0.2, 0.2]`; `*.running_var`: `[0.5, 2.0]`.
pub fn range_for(key: &str, shape: &[usize]) -> Result<Option<(f64, f64)>, FillError> {
    let suffix = key.rsplit('.').next().unwrap_or(key);
    let range = match (suffix, shape.len()) {
        ("weight", r) if r >= 2 => {
            let fan_in: usize = shape[1..].iter().product();
            let b = (6.0 / fan_in as f64).sqrt();
            (-b, b)
        }
        ("weight", 1) => (0.5, 1.5),
        ("bias", 1) | ("running_mean", 1) => (-0.2, 0.2),
        ("running_var", 1) => (0.5, 2.0),
        ("num_batches_tracked", _) => return Ok(None),
        _ => return Err(FillError { key: key.to_string(), shape: shape.to_vec() }),
    };
    Ok(Some(range))
}

/// The netc-fill v1 values of a weight tensor (by key and shape). `num_batches_tracked` has no
/// floating-point values and is an error here.
pub fn weight(key: &str, shape: &[usize]) -> Result<Vec<f32>, FillError> {
    match range_for(key, shape)? {
        Some((lo, hi)) => Ok(uniform(key, shape.iter().product(), lo, hi)),
        None => Err(FillError { key: key.to_string(), shape: shape.to_vec() }),
    }
}

/// The netc-fill v1 test input: key `"input"`, range `[-2, 2]`, `shape` with the batch dimension.
pub fn input(shape: &[usize]) -> Vec<f32> {
    uniform("input", shape.iter().product(), -2.0, 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check values `make_golden.py` recorded in `tests/golden/pytorch/manifest.json`.
    fn manifest() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/pytorch/manifest.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("manifest.json")).expect("valid JSON")
    }

    #[test]
    fn matches_the_python_generator_bit_for_bit() {
        let manifest = manifest();
        assert_eq!(manifest["generator"], "netc-fill v1");
        let checks = manifest["fill_check"].as_object().expect("fill_check");
        assert!(!checks.is_empty());
        for (key, check) in checks {
            let shape: Vec<usize> =
                check["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let seed = format!("0x{:016x}", fnv1a64(key));
            assert_eq!(seed, check["seed"], "{key}: seed");

            let (lo, hi) =
                if key == "input" { (-2.0, 2.0) } else { range_for(key, &shape).unwrap().unwrap() };
            let range = check["range"].as_array().unwrap();
            assert_eq!((lo, hi), (range[0].as_f64().unwrap(), range[1].as_f64().unwrap()), "{key}: range");

            let values = uniform(key, shape.iter().product(), lo, hi);
            let bits: Vec<String> = values[..4].iter().map(|v| format!("0x{:08x}", v.to_bits())).collect();
            let expected: Vec<&str> =
                check["first4_bits"].as_array().unwrap().iter().map(|b| b.as_str().unwrap()).collect();
            assert_eq!(bits, expected, "{key}: first four values");

            let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
            let expected_sum = check["sum_f64"].as_f64().unwrap();
            // numpy sums pairwise, we sum left to right: the f64 sums may differ in the last bits.
            assert!(
                (sum - expected_sum).abs() <= 1e-9 * expected_sum.abs().max(1.0),
                "{key}: sum {sum} vs {expected_sum}"
            );
        }
    }

    #[test]
    fn ranges_follow_the_key_suffix_and_rank() {
        assert_eq!(range_for("fc.bias", &[10]).unwrap(), Some((-0.2, 0.2)));
        assert_eq!(range_for("bn1.weight", &[10]).unwrap(), Some((0.5, 1.5)));
        assert_eq!(range_for("bn1.running_var", &[10]).unwrap(), Some((0.5, 2.0)));
        assert_eq!(range_for("bn1.num_batches_tracked", &[]).unwrap(), None);
        let (lo, hi) = range_for("fc.weight", &[10, 24]).unwrap().unwrap();
        assert_eq!((lo, hi), (-0.5, 0.5));
        assert!(range_for("fc.scale", &[10]).is_err());
        assert!(weight("bn1.num_batches_tracked", &[]).is_err());
    }

    #[test]
    fn values_depend_on_key_and_index_only() {
        let a = weight("conv.weight", &[4, 3, 3, 3]).unwrap();
        let bound = (6.0f64 / 27.0).sqrt();
        // The first elements do not depend on the tensor's size.
        assert_eq!(&a[..5], &uniform("conv.weight", 5, -bound, bound)[..]);
        assert_ne!(weight("conv2.weight", &[4, 3, 3, 3]).unwrap(), a);
    }
}
